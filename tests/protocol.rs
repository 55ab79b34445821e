//! `xcat-imaged serve` from the bridge's side: requests, calls, errors, cancellation.

use crate::util::{request, Dir, Served};
use std::time::{Duration, Instant};
use xcat_imaged::protocol::{Call, FromShim, Reply, ToShim};

fn no_calls(c: &Call) -> Reply {
    panic!("unexpected call {c:?}")
}

fn lockdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn usage_over_the_wire() {
    let l = lockdir();
    let mut s = Served::start(l.path());
    s.send(&FromShim::Request(request("rmimage", &["-h"])));
    let t = s.finish(no_calls);
    assert_eq!(
        t.messages,
        vec![ToShim::Info {
            text: xcat_imaged::commands::rmimage::USAGE.into()
        }]
    );
    assert_eq!(t.done, Some(0));
    assert_eq!(t.exit, Some(0));
}

#[test]
fn bad_first_lines_get_an_error_and_done() {
    let cases: &[(&[u8], &str)] = &[
        (b"not json\n", "xcat-imaged: malformed message"),
        (b"{\"type\":\"request\",\"v\":2,\"command\":\"rmimage\"}\n", "xcat-imaged: unsupported protocol version 2; this engine speaks version 1"),
        (b"{\"type\":\"reply\",\"id\":1,\"ok\":true}\n", "xcat-imaged: expected a request as the first message, got \"reply\""),
        (b"{\"type\":\"bogus\"}\n", "xcat-imaged: expected a request as the first message, got \"bogus\""),
        (b"{\"type\":\"request\",\"v\":1,\"command\":\"rmimage\",\"args\":[1]}\n", "xcat-imaged: malformed request"),
        (b"[1,2]\n", "xcat-imaged: malformed message: not a JSON object"),
        (b"\xff\xfe\n", "xcat-imaged: line is not UTF-8"),
        (b"", "xcat-imaged: no request: stdin closed before the first line"),
        (b"{\"type\":\"request\",\"v\":1,\"command\":\"frobimage\"}\n", "xcat-imaged: unknown command \"frobimage\"; it handles genimage, packimage, imgexport, rmimage"),
    ];
    for (line, want) in cases {
        let l = lockdir();
        let mut s = Served::start(l.path());
        s.send_raw(line);
        s.close_stdin();
        let t = s.finish(no_calls);
        let errors = t.errors();
        assert_eq!(
            errors.len(),
            1,
            "{:?}: {t:?}",
            String::from_utf8_lossy(line)
        );
        assert!(
            errors[0].0.starts_with(want),
            "{:?} vs {want:?}",
            errors[0].0
        );
        assert_eq!(errors[0].1, 1);
        assert_eq!(t.done, Some(1));
    }
}

#[test]
fn huge_first_line_is_refused_without_hanging() {
    let l = lockdir();
    let mut s = Served::start(l.path());
    let big = vec![b'x'; 5 * 1024 * 1024];
    // The engine may stop reading once the line is too long; a broken pipe is fine.
    let stdin_writer = {
        let mut child_stdin = s.take_stdin();
        std::thread::spawn(move || {
            if let Some(w) = child_stdin.as_mut() {
                use std::io::Write;
                let _ = w.write_all(&big);
            }
        })
    };
    let t = s.finish(no_calls);
    let _ = stdin_writer.join();
    assert_eq!(t.done, Some(1));
    assert!(t.errors()[0].0.contains("line longer than"), "{t:?}");
}

#[test]
fn calls_are_answered_and_delete_goes_through_the_bridge() {
    let d = Dir::new();
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    d.defs(&format!(
        "img:\n    objtype=osimage\n    imagetype=linux\n    provmethod=netboot\n    rootimgdir={}\n\n",
        dir.display()
    ));
    let mut defs = d.read_defs();
    let mut s = Served::start(&d.locks());
    s.send(&FromShim::Request(request(
        "rmimage",
        &["img", "--xcatdef"],
    )));
    let t = s.finish(crate::util::answer_from(&mut defs));
    assert_eq!(t.done, Some(0), "{t:?}");
    let methods: Vec<&str> = t.calls.iter().map(Call::method).collect();
    assert_eq!(
        methods,
        [
            "site.get",
            "site.get",
            "table.get",
            "table.get",
            "table.delete",
            "table.delete",
            "table.delete",
            "table.delete"
        ]
    );
    let deleted: Vec<String> = t
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::TableDelete { table, keys } => Some(format!("{table}:{}", keys["imagename"])),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [
            "osimage:img",
            "linuximage:img",
            "nimimage:img",
            "winimage:img"
        ]
    );
    assert!(defs.objects().iter().all(|o| o.name != "img"));
    assert_eq!(
        t.infos().last(),
        Some(&"osimage definition for img is removed successfully.")
    );
    assert!(!dir.join("rootimg").exists());
}

#[test]
fn failed_calls_become_errors() {
    let l = lockdir();
    let mut s = Served::start(l.path());
    s.send(&FromShim::Request(request("rmimage", &["img"])));
    let t = s.finish(|_| Reply {
        id: 0,
        ok: false,
        result: None,
        error: Some("Can not open site table.".into()),
    });
    assert_eq!(t.done, Some(1));
    assert_eq!(
        t.errors(),
        vec![("site.get failed: Can not open site table.", 1)]
    );
}

#[test]
fn stdin_eof_during_a_call_cancels() {
    let l = lockdir();
    let mut s = Served::start(l.path());
    s.send(&FromShim::Request(request("rmimage", &["img"])));
    match s.next() {
        Some(ToShim::Call { .. }) => {}
        other => panic!("expected a call, got {other:?}"),
    }
    s.close_stdin();
    let t = s.finish(no_calls);
    assert_eq!(t.done, Some(1));
    assert_eq!(t.errors(), vec![("interrupted", 1)]);
}

#[test]
fn sigterm_while_waiting_for_a_reply_cancels() {
    let l = lockdir();
    let mut s = Served::start(l.path());
    s.send(&FromShim::Request(request("rmimage", &["img"])));
    assert!(matches!(s.next(), Some(ToShim::Call { .. })));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let t = s.finish(no_calls);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(t.done, Some(1));
    assert_eq!(t.errors(), vec![("interrupted", 1)]);
}

#[test]
fn bad_lines_after_the_request_are_protocol_errors() {
    let cases: &[&[u8]] = &[
        b"garbage\n",
        b"{\"type\":\"reply\",\"id\":99,\"ok\":true}\n",
        b"{\"type\":\"request\",\"v\":1,\"command\":\"rmimage\"}\n",
        b"{\"type\":\"unknown\"}\n",
    ];
    for line in cases {
        let l = lockdir();
        let mut s = Served::start(l.path());
        s.send(&FromShim::Request(request("rmimage", &["img"])));
        assert!(matches!(s.next(), Some(ToShim::Call { .. })));
        s.send_raw(line);
        let t = s.finish(no_calls);
        assert_eq!(t.done, Some(1), "{:?}", String::from_utf8_lossy(line));
        let errors = t.errors();
        assert!(
            errors[0].0.starts_with("xcat-imaged protocol error: "),
            "{errors:?}"
        );
        assert_eq!(
            errors.len(),
            2,
            "the protocol error, then the interrupted command: {errors:?}"
        );
    }
}

#[test]
fn unimplemented_commands_say_how_to_switch_back() {
    // Every command is implemented; genimage of an OS family xCAT has no genimage script for
    // either (centos-stream) says how to hand genimage back to xCAT, after reading the tables
    // over the wire.
    let d = Dir::new();
    let pkglist = d.write("compute.pkglist", "bash\n");
    d.defs(&format!(
        "rhels9-x86_64-netboot-compute:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=centos-stream9\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n",
        pkglist.display()
    ));
    let mut defs = d.read_defs();
    let mut s = Served::start(&d.locks());
    s.send(&FromShim::Request(request(
        "genimage",
        &["rhels9-x86_64-netboot-compute"],
    )));
    let t = s.finish(crate::util::answer_from(&mut defs));
    assert_eq!(t.done, Some(1));
    assert!(
        t.errors()[0].0.contains("chtab -d key=imagehandler site"),
        "{t:?}"
    );
    assert!(
        !t.calls.iter().any(|c| matches!(c, Call::TableSet { .. })),
        "nothing is written back: {t:?}"
    );
}
