//! The lsdef -z stanza parser. Invariant: whatever it accepts, it writes back so that parsing
//! the written text gives the same definitions (parse ∘ to_stanza = identity), and the written
//! text is stable (to_stanza ∘ parse ∘ to_stanza = to_stanza).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xcat_imaged::defs::Defs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(defs) = Defs::parse(text) else {
        return;
    };
    let written = defs.to_stanza();
    let back = Defs::parse(&written)
        .unwrap_or_else(|e| panic!("cannot read back what was written: {e}\n{written}"));
    assert_eq!(back, defs, "round trip changed the definitions\n{written}");
    assert_eq!(back.to_stanza(), written);
});
