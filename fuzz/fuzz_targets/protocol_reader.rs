//! The protocol reader: bytes from the bridge split into lines, each decoded as a message and
//! the first checked as a request. Invariants: lines never hold `\n` and never exceed
//! MAX_LINE; every decoded message and every accepted request survives write_line → decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use xcat_imaged::protocol::{self, FromShim, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    let mut first = true;
    let mut consumed = 0usize;
    loop {
        let line = match protocol::read_raw_line(&mut r) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                break;
            }
        };
        assert!(!line.contains(&b'\n'));
        assert!(line.len() <= MAX_LINE);
        // The line is exactly the next bytes of the input.
        assert_eq!(&data[consumed..consumed + line.len()], &line[..]);
        consumed += line.len() + 1;
        if first {
            first = false;
            if let Ok(req) = protocol::parse_request(&line) {
                assert_eq!(req.v, protocol::VERSION);
                let mut out = Vec::new();
                protocol::write_line(&mut out, &FromShim::Request(req.clone())).unwrap();
                assert_eq!(out.last(), Some(&b'\n'));
                let back = protocol::parse_request(&out[..out.len() - 1]).unwrap();
                assert_eq!(back, req);
            }
        }
        if let Ok(msg) = protocol::decode::<FromShim>(&line) {
            let mut out = Vec::new();
            protocol::write_line(&mut out, &msg).unwrap();
            assert_eq!(
                out.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one line out"
            );
            let back: FromShim = protocol::decode(&out[..out.len() - 1]).unwrap();
            assert_eq!(back, msg);
        }
    }
});
