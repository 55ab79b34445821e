//! Bad input, as one table: malformed protocol lines, bad arguments, hostile image names and
//! hostile definitions. Every case runs through the real engine, standalone (`--defs FILE`)
//! and over `xcat-imaged serve` (unless it only makes sense in one of them), in a fresh
//! management-node tree. Each must end with a clear error in xCAT's style (the fragment given),
//! errorcode 1, and the whole temp tree exactly as it was: paths, types, modes, sizes, mtimes
//! and content hashes. As root the engine also runs with `/` read-only in a private mount
//! namespace (only the temp tree stays writable), so a hostile `rootimgdir=/` that slipped
//! through could not touch the host.

use crate::util::{answer_from, is_root, Dir};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::hash::Hasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xcat_imaged::protocol::{self, Call, FromShim, Request, ToShim, MAX_LINE};

/// How a case reaches the engine.
#[derive(Clone)]
enum Input {
    /// A command line: standalone and over serve.
    Cmd(&'static str, Vec<String>),
    /// A command line only over serve (NUL cannot be in a process argument).
    ServeOnly(&'static str, Vec<String>),
    /// Raw bytes as everything the bridge sends.
    Raw(Vec<u8>),
    /// `rmimage img`, then these bytes instead of the reply to the first call.
    AfterCall(Vec<u8>),
}

/// One bad input and what must come of it.
#[derive(Clone)]
struct Case {
    input: Input,
    /// Attribute overrides for the osimage the case is about (`""` removes the attribute).
    image: Vec<(&'static str, String)>,
    /// Site attribute overrides.
    site: Vec<(&'static str, String)>,
    /// Extra files (relative path, content); `{R}` is the temp root.
    files: Vec<(String, String)>,
    /// Symlinks (relative path, target).
    links: Vec<(&'static str, &'static str)>,
    /// A fragment of the error text (`{R}` is the temp root).
    want: String,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

fn case(input: Input, want: &str) -> Case {
    Case {
        input,
        image: Vec::new(),
        site: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
        want: want.into(),
    }
}

fn cmd(command: &'static str, args: &[&str], want: &str) -> Case {
    case(Input::Cmd(command, s(args)), want)
}

fn serve_only(command: &'static str, args: &[&str], want: &str) -> Case {
    case(Input::ServeOnly(command, s(args)), want)
}

fn raw(bytes: &[u8], want: &str) -> Case {
    case(Input::Raw(bytes.to_vec()), want)
}

fn after_call(bytes: &[u8], want: &str) -> Case {
    case(Input::AfterCall(bytes.to_vec()), want)
}

impl Case {
    fn image(mut self, attr: &'static str, v: &str) -> Case {
        self.image.push((attr, v.into()));
        self
    }
    fn site(mut self, attr: &'static str, v: &str) -> Case {
        self.site.push((attr, v.into()));
        self
    }
    fn file(mut self, rel: &str, text: &str) -> Case {
        self.files.push((rel.into(), text.into()));
        self
    }
    /// Lists `<dir>/0.<ext>` .. `<dir>/12.<ext>`, each including the next one twice: 2^12
    /// expansions, bounded only by a limit on includes in all (depth alone is not enough).
    fn fan_out(mut self, dir: &str, ext: &str) -> Case {
        for i in 0..12 {
            let next = format!("#INCLUDE:{}.{ext}#\n", i + 1);
            self = self.file(&format!("{dir}/{i}.{ext}"), &next.repeat(2));
        }
        self.file(&format!("{dir}/12.{ext}"), "./tmp*\n")
    }
    fn link(mut self, rel: &'static str, target: &'static str) -> Case {
        self.links.push((rel, target));
        self
    }
    /// The image the case is about: `img` (rhels9) unless the command is genimage (`deb`).
    fn image_name(&self) -> &'static str {
        match &self.input {
            Input::Cmd("genimage", _) | Input::ServeOnly("genimage", _) => "deb",
            _ => "img",
        }
    }
    fn describe(&self) -> String {
        let input = match &self.input {
            Input::Cmd(c, a) | Input::ServeOnly(c, a) => format!("{c} {a:?}"),
            Input::Raw(b) => format!("raw {:?}", String::from_utf8_lossy(&b[..b.len().min(80)])),
            Input::AfterCall(b) => format!(
                "after the first call: {:?}",
                String::from_utf8_lossy(&b[..b.len().min(80)])
            ),
        };
        format!(
            "{input} image={:?} site={:?} files={:?}",
            self.image, self.site, self.files
        )
    }
}

const DEB_PKGLIST: &str = "lists/deb.pkglist";

fn cases() -> Vec<Case> {
    let req = |rest: &str| format!("{{\"type\":\"request\",\"v\":1{rest}}}\n");
    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    let mut huge = vec![b'x'; MAX_LINE + 1];
    huge.push(b'\n');
    let mut c = vec![
        // ---- the protocol's first line --------------------------------------------------
        raw(b"not json\n", "xcat-imaged: malformed message: expected ident at line 1 column 2"),
        raw(b"{\"type\":\"request\",\n", "xcat-imaged: malformed message: EOF while parsing"),
        raw(b"[]\n", "xcat-imaged: malformed message: not a JSON object"),
        raw(b"null\n", "xcat-imaged: malformed message: not a JSON object"),
        raw(b"\"request\"\n", "xcat-imaged: malformed message: not a JSON object"),
        raw(b"{}\n", "xcat-imaged: malformed message: missing \"type\""),
        raw(b"{\"type\":7}\n", "xcat-imaged: malformed message: \"type\" is 7, not a string"),
        raw(b"{\"type\":\"request\"}\n", "xcat-imaged: malformed request: missing \"v\""),
        raw(b"{\"type\":\"request\",\"v\":\"1\",\"command\":\"rmimage\"}\n", "xcat-imaged: unsupported protocol version \"1\"; this engine speaks version 1"),
        raw(b"{\"type\":\"request\",\"v\":1.5,\"command\":\"rmimage\"}\n", "xcat-imaged: unsupported protocol version 1.5"),
        raw(b"{\"type\":\"request\",\"v\":-1,\"command\":\"rmimage\"}\n", "xcat-imaged: unsupported protocol version -1"),
        raw(req("").as_bytes(), "xcat-imaged: malformed request: missing field `command`"),
        raw(req(",\"command\":7").as_bytes(), "xcat-imaged: malformed request: invalid type: integer `7`, expected a string"),
        raw(req(",\"command\":\"rmimage\",\"args\":\"img\"").as_bytes(), "xcat-imaged: malformed request: invalid type: string \"img\", expected a sequence"),
        raw(req(",\"command\":\"rmimage\",\"args\":[1]").as_bytes(), "xcat-imaged: malformed request: invalid type: integer `1`, expected a string"),
        raw(req(",\"command\":\"rmimage\",\"args\":[null]").as_bytes(), "xcat-imaged: malformed request: invalid type: null, expected a string"),
        raw(req(",\"command\":\"rmimage\",\"environment\":[\"X\"]").as_bytes(), "xcat-imaged: malformed request: invalid type: sequence, expected a map"),
        raw(req(",\"command\":\"rmimage\",\"environment\":{\"XCAT_X\":1}").as_bytes(), "xcat-imaged: malformed request: invalid type: integer `1`, expected a string"),
        raw(req(",\"command\":\"rmimage\",\"cwd\":5").as_bytes(), "xcat-imaged: malformed request: invalid type: integer `5`, expected a string"),
        raw(req(",\"command\":\"frobimage\"").as_bytes(), "xcat-imaged: unknown command \"frobimage\"; it handles genimage, packimage, imgexport, rmimage"),
        raw(req(",\"command\":\"\"").as_bytes(), "xcat-imaged: unknown command \"\""),
        raw(req(",\"command\":\"rmimage\\n\"").as_bytes(), "xcat-imaged: unknown command \"rmimage\\n\""),
        raw(req(",\"command\":\"../rmimage\"").as_bytes(), "xcat-imaged: unknown command \"../rmimage\""),
        raw(req(",\"command\":\"rmimage;touch pwned\"").as_bytes(), "xcat-imaged: unknown command \"rmimage;touch pwned\""),
        raw(req(",\"command\":\"rm\\u0000image\"").as_bytes(), "xcat-imaged: unknown command \"rm\\u{0}image\""),
        raw(b"{\"type\":\"request\",\"v\":1,\"command\":\"rm\x00image\"}\n", "xcat-imaged: malformed message: control character"),
        raw(b"{\"type\":\"reply\",\"id\":1,\"ok\":true}\n", "xcat-imaged: expected a request as the first message, got \"reply\""),
        raw(b"\xff\xfe{}\n", "xcat-imaged: line is not UTF-8"),
        raw(b"\xef\xbb\xbf{\"type\":\"request\",\"v\":1,\"command\":\"rmimage\"}\n", "xcat-imaged: malformed message: expected value"),
        raw(b"{\"type\":\"request\",\"v\":1,\"command\":\"rmimage\"}{\"type\":\"request\"}\n", "xcat-imaged: malformed message: trailing characters"),
        raw(&deep, "xcat-imaged: malformed message: recursion limit exceeded"),
        raw(b"", "xcat-imaged: no request: stdin closed before the first line"),
        raw(&huge, "xcat-imaged: cannot read the request: line longer than 4194304 bytes"),
        // ---- lines after the request ------------------------------------------------------
        after_call(b"garbage\n", "xcat-imaged protocol error: malformed message: expected value"),
        after_call(b"{\"type\":\"reply\",\"id\":99,\"ok\":true}\n", "xcat-imaged protocol error: reply for unknown call id 99"),
        after_call(b"{\"type\":\"request\",\"v\":1,\"command\":\"rmimage\"}\n", "xcat-imaged protocol error: a second request on one connection"),
        after_call(b"{\"type\":\"bogus\"}\n", "xcat-imaged protocol error: malformed message: unknown variant `bogus`"),
        after_call(b"{\"type\":\"reply\",\"id\":\"1\",\"ok\":true}\n", "xcat-imaged protocol error: malformed message: invalid type: string \"1\", expected u64"),
        after_call(b"{\"type\":\"reply\",\"id\":1,\"ok\":\"yes\"}\n", "xcat-imaged protocol error: malformed message: invalid type: string \"yes\", expected a boolean"),
        after_call(b"\xc3\x28\n", "xcat-imaged protocol error: line is not UTF-8"),
        after_call(&huge, "xcat-imaged protocol error: cannot read from the bridge: line longer than 4194304 bytes"),
        after_call(b"{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":[1,2]}\n", "site.get returned an unexpected result: expected a string, got [1,2]"),
        after_call(b"{\"type\":\"reply\",\"id\":1,\"ok\":true,\"result\":{\"x\":1}}\n", "site.get returned an unexpected result: expected a string, got {\"x\":1}"),
        after_call(b"{\"type\":\"reply\",\"id\":1,\"ok\":false}\n", "site.get failed: call failed without a reason"),
        // ---- rmimage arguments -------------------------------------------------------------
        cmd("rmimage", &[], "Missing flag -o, -a or -p"),
        cmd("rmimage", &["a/b"], "Invalid image name a/b"),
        cmd("rmimage", &[".."], "Invalid image name .."),
        cmd("rmimage", &["."], "Invalid image name ."),
        cmd("rmimage", &["0"], "Invalid image name 0"),
        cmd("rmimage", &[""], "Invalid image name \"\""),
        cmd("rmimage", &["img\nimg"], "Invalid image name \"img\\nimg\""),
        serve_only("rmimage", &["img\0x"], "Invalid image name \"img\\0x\""),
        cmd("rmimage", &["-v", "img"], "Invalid image name -v"),
        cmd("rmimage", &["--bogus", "img"], "Invalid image name --bogus"),
        cmd("rmimage", &["img;touch pwned"], "Invalid image name img;touch pwned"),
        cmd("rmimage", &["$(touch pwned)"], "Invalid image name $(touch pwned)"),
        cmd("rmimage", &["`touch pwned`"], "Invalid image name `touch pwned`"),
        cmd("rmimage", &["img", "-o", "rhels9"], "-o, -a and -p options are not allowed when a image name is specified."),
        cmd("rmimage", &["-o", "rhels9", "-a", "x86_64", "-p", "compute", "--xcatdef"], "--xcatdef can not be used with the -o, -a or -p"),
        cmd("rmimage", &["-o", "..", "-a", "x86_64", "-p", "compute"], "Invalid value .. for -o: it is . or .."),
        cmd("rmimage", &["-o", "rhels9", "-a", "x86_64", "-p", "a/../b"], "Invalid value a/../b for -p: it contains /"),
        cmd("rmimage", &["-o", "rhels9", "-a", "x86\n64", "-p", "compute"], "Invalid value \"x86\\n64\" for -a: it contains control characters"),
        // ---- rmimage definitions -----------------------------------------------------------
        cmd("rmimage", &["img"], "Refusing to remove image files in /: / is / or a top-level directory").image("rootimgdir", "/"),
        cmd("rmimage", &["img"], "Refusing to remove image files in /install: /install is / or a top-level directory").image("rootimgdir", "/install"),
        cmd("rmimage", &["img"], "Refusing to remove image files in {R}/install: it is {R}/install itself").image("rootimgdir", "{R}/install"),
        cmd("rmimage", &["img"], "Refusing to remove image files in {R}: it would contain {R}/install").image("rootimgdir", "{R}"),
        cmd("rmimage", &["img"], "Invalid rootimgdir install/netboot for osimage img: it is not an absolute path").image("rootimgdir", "install/netboot"),
        cmd("rmimage", &["img"], "Invalid rootimgdir {R}/install/netboot/../.. for osimage img: it contains . or .. components").image("rootimgdir", "{R}/install/netboot/../.."),
        cmd("rmimage", &["img"], "it resolves to /, and / is / or a top-level directory").image("rootimgdir", "{R}/install/netboot/evil").link("install/netboot/evil", "/"),
        cmd("rmimage", &["img"], "The site attribute installdir (install) cannot be used: it is not an absolute path").site("installdir", "install"),
        cmd("rmimage", &["img"], "The site attribute tftpdir ({R}/tftpboot/..) cannot be used: it contains . or .. components").site("tftpdir", "{R}/tftpboot/.."),
        cmd("rmimage", &["img"], "Invalid osvers ../../.. for osimage img: it contains /").image("rootimgdir", "").image("osvers", "../../.."),
        // ---- packimage arguments -----------------------------------------------------------
        cmd("packimage", &["-m", "tar"], "An image name is required, use 'packimage <osimage name>'."),
        cmd("packimage", &["img", "-m", "zip"], "Invalid archive method 'zip' requested"),
        cmd("packimage", &["img", "-m", "tar;touch pwned"], "Invalid archive method 'tar;touch pwned' requested"),
        cmd("packimage", &["img", "-c", "bzip2"], "Invalid compress method 'bzip2' requested"),
        cmd("packimage", &["img", "-c", "$(touch pwned)"], "Invalid compress method '$(touch pwned)' requested"),
        cmd("packimage", &["-o", "rhels9", "img"], "-o, -p and -a options are obsoleted, please use 'packimage <osimage name>' instead."),
        cmd("packimage", &["--bogus", "img"], "Cannot find image '--bogus' from the osimage table."),
        cmd("packimage", &["a/b"], "Cannot find image 'a/b' from the osimage table."),
        cmd("packimage", &[".."], "Cannot find image '..' from the osimage table."),
        cmd("packimage", &["img\nimg"], "Cannot find image '\"img\\nimg\"' from the osimage table."),
        serve_only("packimage", &["img\0"], "Cannot find image '\"img\\0\"' from the osimage table."),
        cmd("packimage", &["img;touch pwned"], "Cannot find image 'img;touch pwned' from the osimage table."),
        cmd("packimage", &["$(touch pwned)"], "Cannot find image '$(touch pwned)' from the osimage table."),
        cmd("packimage", &["`touch pwned`"], "Cannot find image '`touch pwned`' from the osimage table."),
        // ---- packimage definitions ---------------------------------------------------------
        cmd("packimage", &["img"], "Refusing to pack into /: / is / or a top-level directory").image("rootimgdir", "/"),
        cmd("packimage", &["img"], "Refusing to pack into /install: /install is / or a top-level directory").image("rootimgdir", "/install"),
        cmd("packimage", &["img"], "Refusing to pack into {R}/install: it is {R}/install itself").image("rootimgdir", "{R}/install"),
        cmd("packimage", &["img"], "Invalid rootimgdir rootimg for osimage img: it is not an absolute path").image("rootimgdir", "rootimg"),
        cmd("packimage", &["img"], "Invalid rootimgdir {R}/install/.. for osimage img: it contains . or .. components").image("rootimgdir", "{R}/install/.."),
        cmd("packimage", &["img"], "it resolves to /, and / is / or a top-level directory").image("rootimgdir", "{R}/install/netboot/evil").link("install/netboot/evil", "/"),
        cmd("packimage", &["img"], "'img' cannot be used to build diskless image. Make sure osimage.provmethod is 'netboot'.").image("provmethod", "install"),
        cmd("packimage", &["img"], "osimage.osvers, osimage.osarch, osimage.profile and osimage.provmethod must be specified for the image img in the database.").image("osvers", ""),
        cmd("packimage", &["img"], "Invalid site timezone ../../etc/passwd").site("timezone", "../../etc/passwd"),
        cmd("packimage", &["img"], "Cannot use exlist {R}/lists/out.exlist: {R}/lists/out.exlist:2: pattern ../etc* has a .. component").image("exlist", "{R}/lists/out.exlist").file("lists/out.exlist", "./usr/share/doc*\n../etc*\n"),
        cmd("packimage", &["img"], "pattern ./../../etc/shadow has a .. component").image("exlist", "{R}/lists/out.exlist").file("lists/out.exlist", "+./../../etc/shadow\n"),
        cmd("packimage", &["img"], "#INCLUDE: cycle: {R}/lists/self.exlist -> {R}/lists/self.exlist").image("exlist", "{R}/lists/self.exlist").file("lists/self.exlist", "./tmp*\n#INCLUDE:self.exlist#\n"),
        cmd("packimage", &["img"], "#INCLUDE: more than 1024 includes in all").image("exlist", "{R}/fan/0.exlist").fan_out("fan", "exlist"),
        cmd("genimage", &["deb", "--dryrun"], "pkglist: #INCLUDE: more than 1024 files read for {R}/fan/0.pkglist").image("pkglist", "{R}/fan/0.pkglist").fan_out("fan", "pkglist"),
        cmd("packimage", &["img"], "Cannot use exlist {R}/lists/none.exlist: {R}/lists/none.exlist: cannot read exlist: No such file or directory").image("exlist", "{R}/lists/none.exlist"),
        cmd("packimage", &["img"], "destination etc/hosts is not absolute").image("synclists", "{R}/lists/s.synclist").file("lists/s.synclist", "/etc/hosts -> etc/hosts\n"),
        cmd("packimage", &["img"], "destination /../../etc/shadow contains `..`; it must stay inside the image").image("synclists", "{R}/lists/s.synclist").file("lists/s.synclist", "/etc/hosts -> /../../etc/shadow\n"),
        cmd("packimage", &["img"], "destination /../etc/hosts contains `..`").image("synclists", "{R}/lists/s.synclist").image("environvar", "D=/..").file("lists/s.synclist", "/etc/hosts -> $D/etc/hosts\n"),
        cmd("packimage", &["img"], "destination /etc/x;touch contains `;`").image("synclists", "{R}/lists/s.synclist").file("lists/s.synclist", "/etc/hosts -> /etc/x;touch\n"),
        cmd("packimage", &["img"], "source hosts is not an absolute path on the management node").image("synclists", "{R}/lists/s.synclist").file("lists/s.synclist", "hosts -> /etc/hosts\n"),
        cmd("packimage", &["img"], "undefined variable $NOPE").image("synclists", "{R}/lists/s.synclist").file("lists/s.synclist", "/etc/hosts -> $NOPE/hosts\n"),
        // ---- imgexport ---------------------------------------------------------------------
        cmd("imgexport", &[], "imgexport needs an image name."),
        cmd("imgexport", &["--bogus"], "Cannot find image '' from the osimage table."),
        cmd("imgexport", &["a/b"], "Cannot find image 'a/b' from the osimage table."),
        cmd("imgexport", &[".."], "Cannot find image '..' from the osimage table."),
        cmd("imgexport", &["img\nimg"], "Cannot find image '\"img\\nimg\"' from the osimage table."),
        serve_only("imgexport", &["img\0"], "Cannot find image '\"img\\0\"' from the osimage table."),
        cmd("imgexport", &["$(touch pwned)"], "Cannot find image '$(touch pwned)' from the osimage table."),
        cmd("imgexport", &["img", "-R", "root@mn;touch pwned"], "Invalid remote host root@mn;touch pwned: use user@host"),
        cmd("imgexport", &["img", "-R", "-oProxyCommand=touch pwned"], "Invalid remote host -oProxyCommand=touch pwned: use user@host"),
        cmd("imgexport", &["img", "-e", "{R}/nonexistent"], "Can not find Extra file {R}/nonexistent."),
        cmd("imgexport", &["img", "-p", "$(touch pwned)"], "Unable to open table 'nodelist'"),
        cmd("imgexport", &["img", "bad\ndest.tgz"], "Invalid bundle name \"bad\\ndest.tgz\": it contains control characters"),
        cmd("imgexport", &["img"], "Invalid rootimgdir / for osimage img: it is / or a top-level directory").image("rootimgdir", "/"),
        cmd("imgexport", &["img"], "Invalid rootimgdir relative/dir for osimage img: it is not an absolute path").image("rootimgdir", "relative/dir"),
        cmd("imgexport", &["img"], "Invalid rootimgdir {R}/install/../install/netboot/rhels9/x86_64/compute for osimage img: it contains . or .. components").image("rootimgdir", "{R}/install/../install/netboot/rhels9/x86_64/compute"),
        cmd("imgexport", &["img"], "Invalid rootimgdir /install for osimage img: it is / or a top-level directory").image("rootimgdir", "/install"),
        // ---- genimage (--dryrun reaches the list parsers without building anything) ----------
        cmd("genimage", &["--interactive", "deb"], "--interactive is not supported by this engine"),
        cmd("genimage", &["--bogus", "deb"], "Unknown option --bogus"),
        cmd("genimage", &["a/b", "--dryrun"], "Cannot find image 'a/b' from the osimage table."),
        cmd("genimage", &["..", "--dryrun"], "Cannot find image '..' from the osimage table."),
        cmd("genimage", &["deb\ndeb", "--dryrun"], "Cannot find image '\"deb\\ndeb\"' from the osimage table."),
        serve_only("genimage", &["deb\0", "--dryrun"], "Cannot find image '\"deb\\0\"' from the osimage table."),
        cmd("genimage", &["$(touch pwned)", "--dryrun"], "Cannot find image '$(touch pwned)' from the osimage table."),
        cmd("genimage", &["`touch pwned`;x", "--dryrun"], "Cannot find image '`touch pwned`;x' from the osimage table."),
        cmd("genimage", &["-o", "../x", "-p", "compute", "-a", "x86_64", "--dryrun"], "Invalid osver ../x: it contains /"),
        cmd("genimage", &["-o", "debian12", "-p", "a/b", "-a", "x86_64", "--dryrun"], "Invalid profile a/b: it contains /"),
        cmd("genimage", &["deb", "--dryrun"], "Refusing to build the image in /: / is / or a top-level directory").image("rootimgdir", "/"),
        cmd("genimage", &["deb", "--dryrun"], "Refusing to build the image in /install: /install is / or a top-level directory").image("rootimgdir", "/install"),
        cmd("genimage", &["deb", "--dryrun"], "Refusing to build the image in {R}/install: it is {R}/install itself").image("rootimgdir", "{R}/install"),
        cmd("genimage", &["deb", "--dryrun"], "The rootimgdir (images/deb) cannot be used: it is not an absolute path").image("rootimgdir", "images/deb"),
        cmd("genimage", &["deb", "--dryrun"], "The rootimgdir ({R}/install/../..) cannot be used: it contains . or .. components").image("rootimgdir", "{R}/install/../.."),
        cmd("genimage", &["deb", "--dryrun"], "pkglist: #INCLUDE cycle: {R}/lists/self.pkglist -> {R}/lists/self.pkglist").image("pkglist", "{R}/lists/self.pkglist").file("lists/self.pkglist", "bash\n#INCLUDE:self.pkglist#\n"),
        cmd("genimage", &["deb", "--dryrun"], "pkglist: #INCLUDE cycle: {R}/lists/a.pkglist -> {R}/lists/b.pkglist -> {R}/lists/a.pkglist").image("pkglist", "{R}/lists/a.pkglist").file("lists/a.pkglist", "#INCLUDE:b.pkglist#\n").file("lists/b.pkglist", "vim\n#INCLUDE:{R}/lists/a.pkglist#\n"),
        cmd("genimage", &["deb", "--dryrun"], "otherpkglist: #INCLUDE cycle").image("otherpkglist", "{R}/lists/self.pkglist").file("lists/self.pkglist", "#INCLUDE:./self.pkglist#\n"),
        cmd("genimage", &["deb", "--dryrun"], "The pkglist specified '{R}/lists/none.pkglist' does not exist!").image("pkglist", "{R}/lists/none.pkglist"),
        cmd("genimage", &["deb", "--dryrun"], "pkglist: #ENV:rm -rf /#").file(DEB_PKGLIST, "bash\n#ENV:rm -rf /#\n"),
        cmd("genimage", &["deb", "--dryrun"], "pkglist: #INCLUDE:$NOPE/x.pkglist# in {R}/lists/deb.pkglist: $NOPE is not set").file(DEB_PKGLIST, "#INCLUDE:$NOPE/x.pkglist#\n"),
        cmd("genimage", &["deb", "--dryrun"], "osimage.environvar: 1X is not a variable name").image("environvar", "1X=y"),
        cmd("genimage", &["deb", "--dryrun"], "osimage.environvar entry $(touch pwned) is not NAME=value").image("environvar", "$(touch pwned)"),
        cmd("genimage", &["deb", "--dryrun"], "The kerneldir (kernels) cannot be used: it is not an absolute path").image("kerneldir", "kernels"),
        cmd("genimage", &["deb", "--dryrun"], "The site attribute installdir ({R}/install/.) cannot be used").site("installdir", "{R}/install/."),
    ];
    c.shrink_to_fit();
    c
}

// ---- the management node ------------------------------------------------------------------

const IMG_DIR: &str = "install/netboot/rhels9/x86_64/compute";

fn base_image(root: &Path) -> BTreeMap<&'static str, String> {
    let r = root.display();
    BTreeMap::from([
        ("imagetype", "linux".to_string()),
        ("osarch", "x86_64".into()),
        ("osvers", "rhels9".into()),
        ("profile", "compute".into()),
        ("provmethod", "netboot".into()),
        ("rootimgdir", format!("{r}/{IMG_DIR}")),
        ("exlist", format!("{r}/lists/compute.exlist")),
        ("pkglist", format!("{r}/lists/compute.pkglist")),
    ])
}

fn base_deb(root: &Path) -> BTreeMap<&'static str, String> {
    let r = root.display();
    BTreeMap::from([
        ("imagetype", "linux".to_string()),
        ("osarch", "x86_64".into()),
        ("osvers", "debian12".into()),
        ("profile", "compute".into()),
        ("provmethod", "netboot".into()),
        ("pkglist", format!("{r}/{DEB_PKGLIST}")),
        ("pkgdir", "http://deb.debian.org/debian".into()),
    ])
}

fn fill(text: &str, root: &Path) -> String {
    text.replace("{R}", &root.display().to_string())
}

/// Lays out a management node with a complete netboot image `img` and a Debian image `deb`,
/// then the case's changes.
fn lay_out(d: &Dir, c: &Case) {
    let root = d.path();
    let dir = root.join(IMG_DIR);
    d.image(&dir);
    d.write("install/postscripts/xcatdsklspost", "#!/bin/sh\n");
    d.write("lists/compute.exlist", "./usr/share/doc*\n");
    d.write("lists/compute.pkglist", "bash\n");
    d.write(DEB_PKGLIST, "systemd-sysv\nlinux-image-amd64\n");
    std::fs::create_dir_all(d.tftp().join("xcat/osimage/img")).expect("mkdir");
    for (rel, text) in &c.files {
        d.write(rel, &fill(text, root));
    }
    for (rel, target) in &c.links {
        std::os::unix::fs::symlink(target, root.join(rel)).expect("symlink");
    }
    let mut img = base_image(root);
    let mut deb = base_deb(root);
    let about = if c.image_name() == "deb" {
        &mut deb
    } else {
        &mut img
    };
    for (k, v) in &c.image {
        if v.is_empty() {
            about.remove(k);
        } else {
            about.insert(k, fill(v, root));
        }
    }
    let mut objects = String::new();
    for (name, attrs) in [("img", &img), ("deb", &deb)] {
        objects.push_str(&format!("{name}:\n    objtype=osimage\n"));
        for (k, v) in attrs {
            objects.push_str(&format!("    {k}={v}\n"));
        }
        objects.push('\n');
    }
    let site: Vec<(&str, String)> = c.site.iter().map(|(k, v)| (*k, fill(v, root))).collect();
    let mut text = format!(
        "clustersite:\n    objtype=site\n    installdir={}\n    tftpdir={}\n",
        if let Some((_, v)) = site.iter().find(|(k, _)| *k == "installdir") {
            v.clone()
        } else {
            d.install().display().to_string()
        },
        if let Some((_, v)) = site.iter().find(|(k, _)| *k == "tftpdir") {
            v.clone()
        } else {
            d.tftp().display().to_string()
        },
    );
    for (k, v) in site
        .iter()
        .filter(|(k, _)| *k != "installdir" && *k != "tftpdir")
    {
        text.push_str(&format!("    {k}={v}\n"));
    }
    text.push('\n');
    text.push_str(&objects);
    std::fs::write(d.defs_path(), text).expect("write defs");
}

// ---- snapshots ----------------------------------------------------------------------------

/// Everything about every entry below `root`: type, mode, size, mtime, content hash or link
/// target. Two equal snapshots mean nothing on disk changed.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let md = std::fs::symlink_metadata(p).expect("lstat");
        let rel = p.strip_prefix(base).expect("prefix").display().to_string();
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(p).expect("readlink").display()
            )
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(&std::fs::read(p).expect("read"));
            format!("file {:016x}", h.finish())
        } else {
            "other".to_string()
        };
        out.insert(
            rel,
            format!(
                "{what} mode={:o} size={} mtime={}.{:09}",
                md.mode(),
                md.size(),
                md.mtime(),
                md.mtime_nsec()
            ),
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .expect("readdir")
                .map(|e| e.expect("entry").path())
                .collect();
            names.sort();
            for n in names {
                walk(base, &n, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("removed {k}")),
            Some(w) if w != v => d.push(format!("changed {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        d.push(format!("created {k}"));
    }
    d
}

// ---- running the engine -------------------------------------------------------------------

/// As root: the engine runs in a private mount namespace where `/` is read-only and only the
/// temp tree stays writable, so a hostile definition that got past the checks still could not
/// change the host.
fn guard(c: &mut Command, root: &Path) {
    if !is_root() {
        return;
    }
    let r = CString::new(root.as_os_str().as_bytes()).expect("no NUL");
    let slash = CString::new("/").expect("no NUL");
    // SAFETY: only async-signal-safe system calls on strings made before the fork.
    unsafe {
        c.pre_exec(move || {
            use nix::libc::{
                mount, unshare, CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT,
            };
            let null = std::ptr::null();
            let ok = |rc: i32| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            ok(unshare(CLONE_NEWNS))?;
            ok(mount(
                null,
                slash.as_ptr(),
                null,
                MS_REC | MS_PRIVATE,
                null.cast(),
            ))?;
            ok(mount(
                r.as_ptr(),
                r.as_ptr(),
                null,
                MS_BIND | MS_REC,
                null.cast(),
            ))?;
            ok(mount(
                null,
                slash.as_ptr(),
                null,
                MS_REMOUNT | MS_BIND | MS_RDONLY,
                null.cast(),
            ))
        });
    }
}

fn base_command(d: &Dir) -> Command {
    let mut c = Command::new(crate::util::bin());
    c.env_remove("RUST_LOG")
        .env("XCAT_IMAGED_LOCK_DIR", d.locks())
        .env("XCATROOT", d.path().join("no-xcat"))
        .current_dir(d.path());
    guard(&mut c, d.path());
    c
}

/// What one run produced: the error texts with their errorcodes, the final code.
#[derive(Debug)]
struct Outcome {
    errors: Vec<(String, i32)>,
    code: i32,
    /// Everything the engine said, for failure messages.
    all: String,
}

fn run_standalone(d: &Dir, command: &str, args: &[String]) -> Outcome {
    let mut c = base_command(d);
    c.arg(command)
        .args(args.iter().map(|a| fill(a, d.path())))
        .arg("--defs")
        .arg(d.defs_path());
    let o = c.output().expect("run engine");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stderr.starts_with("Error: ") || stderr.starts_with("Warning: "),
        "stderr is xCAT client output only: {stderr:?}"
    );
    // An error text may span lines (genimage's usage); a new message starts with its prefix.
    let mut errors: Vec<(String, i32)> = Vec::new();
    let mut in_error = false;
    for line in stderr.lines() {
        if let Some(t) = line.strip_prefix("Error: ") {
            errors.push((t.to_string(), 1));
            in_error = true;
        } else if line.starts_with("Warning: ") {
            in_error = false;
        } else if in_error {
            let last = errors.last_mut().expect("an error");
            last.0.push('\n');
            last.0.push_str(line);
        } else {
            panic!("stray stderr line {line:?} in {stderr:?}");
        }
    }
    Outcome {
        errors,
        code: o.status.code().unwrap_or(-1),
        all: format!("stdout: {stdout}\nstderr: {stderr}"),
    }
}

/// Runs one session over serve: writes `first` (then, with `after_call`, waits for the first
/// call and writes those bytes instead of a reply), answers further calls from the
/// definitions, and reads to `done`. With `raw`, stdin closes right after `first`.
fn run_served(d: &Dir, first: Vec<u8>, after_call: Option<Vec<u8>>, raw: bool) -> Outcome {
    let mut c = base_command(d);
    c.arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn engine");
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > Duration::from_secs(120) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut stdin = child.stdin.take().expect("stdin");
    // A writer thread: the engine may stop reading a huge line half-way (a broken pipe is fine).
    let writer = std::thread::spawn(move || {
        for chunk in rx {
            if stdin
                .write_all(&chunk)
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
        }
    });
    let _ = tx.send(first);
    let mut after_call = after_call;
    // Raw input is everything the bridge sends: stdin closes after it.
    let mut tx = (!raw).then_some(tx);
    let mut defs = d.read_defs();
    let mut answer = answer_from(&mut defs);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut errors = Vec::new();
    let mut all = String::new();
    let mut done_code = None;
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read") == 0 {
            break;
        }
        all.push_str(&line);
        let msg: ToShim = protocol::decode(line.trim_end_matches('\n').as_bytes())
            .unwrap_or_else(|e| panic!("engine wrote a bad line {line:?}: {e}"));
        assert!(done_code.is_none(), "a line after done: {line:?}");
        match msg {
            ToShim::Call { id, call } => {
                let Some(t) = &tx else { continue };
                let bytes = match after_call.take() {
                    Some(b) => b,
                    None => {
                        let mut reply = answer(&call);
                        reply.id = id;
                        let mut v = Vec::new();
                        protocol::write_line(&mut v, &FromShim::Reply(reply)).expect("encode");
                        v
                    }
                };
                let _ = t.send(bytes);
                let _: &Call = &call;
            }
            ToShim::Error { text, errorcode } => errors.push((text, errorcode)),
            ToShim::Done { errorcode } => {
                done_code = Some(errorcode);
                tx = None;
            }
            _ => {}
        }
    }
    drop(tx);
    let status = child.wait().expect("wait");
    done.store(true, Ordering::SeqCst);
    assert!(
        !watchdog.join().expect("watchdog"),
        "the engine hung: {all}"
    );
    let _ = writer.join();
    let stderr = err_reader.join().expect("stderr");
    assert!(stderr.is_empty(), "serve wrote to stderr: {stderr:?}");
    let code = done_code.unwrap_or_else(|| panic!("no done line: {all}"));
    assert_eq!(
        status.code(),
        Some(code),
        "exit status is the done errorcode"
    );
    Outcome { errors, code, all }
}

fn request_line(d: &Dir, command: &str, args: &[String]) -> Vec<u8> {
    let req = Request {
        v: 1,
        command: command.into(),
        args: args.iter().map(|a| fill(a, d.path())).collect(),
        cwd: Some(d.path().display().to_string()),
        user: Some("root".into()),
        clienttype: Some("cli".into()),
        environment: None,
        xcatroot: Some(d.path().join("no-xcat").display().to_string()),
    };
    let mut v = Vec::new();
    protocol::write_line(&mut v, &FromShim::Request(req)).expect("encode");
    v
}

/// The error texts as xCAT shows them: not empty, no doubled `Error:` prefix, no trailing
/// newline, nothing of Rust's inner workings.
fn check_style(text: &str, what: &str) {
    assert!(!text.trim().is_empty(), "{what}: empty error");
    assert!(
        !text.starts_with("Error"),
        "{what}: doubled prefix: {text:?}"
    );
    assert!(
        !text.ends_with('\n') && !text.ends_with(' '),
        "{what}: {text:?}"
    );
    for bad in [
        "panicked",
        "internal error",
        "RUST_BACKTRACE",
        "Os {",
        "Some(",
        "kind: ",
        "Error {",
        "unwrap",
    ] {
        assert!(!text.contains(bad), "{what}: {bad:?} in {text:?}");
    }
}

fn check(c: &Case, mode: &str, d: &Dir, o: &Outcome) {
    let what = format!("[{mode}] {}", c.describe());
    let want = fill(&c.want, d.path());
    assert_eq!(o.code, 1, "{what}: code\n{}", o.all);
    assert!(!o.errors.is_empty(), "{what}: no error\n{}", o.all);
    for (text, code) in &o.errors {
        assert_eq!(*code, 1, "{what}: errorcode of {text:?}");
        check_style(text, &what);
    }
    assert!(
        o.errors.iter().any(|(t, _)| t.contains(&want)),
        "{what}: no error contains {want:?}\n{}",
        o.all
    );
}

/// Runs one case in one mode in a fresh tree and checks the outcome and the tree.
fn run_case(c: &Case, mode: &str) {
    let d = Dir::new();
    lay_out(&d, c);
    let before = snapshot(d.path());
    let o = match (&c.input, mode) {
        (Input::Cmd(command, args), "standalone") => run_standalone(&d, command, args),
        (Input::Cmd(command, args) | Input::ServeOnly(command, args), "serve") => {
            run_served(&d, request_line(&d, command, args), None, false)
        }
        (Input::Raw(bytes), "serve") => run_served(&d, bytes.clone(), None, true),
        (Input::AfterCall(bytes), "serve") => run_served(
            &d,
            request_line(&d, "rmimage", &s(&["img"])),
            Some(bytes.clone()),
            false,
        ),
        _ => unreachable!("mode {mode}"),
    };
    check(c, mode, &d, &o);
    let after = snapshot(d.path());
    let changes = diff(&before, &after);
    assert!(
        changes.is_empty(),
        "[{mode}] {}: the tree changed: {changes:#?}\n{}",
        c.describe(),
        o.all
    );
}

#[test]
#[allow(clippy::print_stderr)]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let cases = cases();
    let mut runs = 0;
    let mut failures = Vec::new();
    for c in &cases {
        let modes: &[&str] = match c.input {
            Input::Cmd(..) => &["standalone", "serve"],
            _ => &["serve"],
        };
        for mode in modes {
            let t0 = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(c, mode)));
            if let Err(e) = r {
                let text = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(text);
            }
            runs += 1;
            if std::env::var_os("BAD_INPUT_TIMES").is_some() {
                eprintln!(
                    "{:>6} ms [{mode}] {}",
                    t0.elapsed().as_millis(),
                    c.describe()
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        let k = match &c.input {
            Input::Raw(_) => "protocol, first line".to_string(),
            Input::AfterCall(_) => "protocol, after the request".to_string(),
            Input::Cmd(cmd, _) | Input::ServeOnly(cmd, _)
                if !c.image.is_empty() || !c.site.is_empty() || !c.files.is_empty() =>
            {
                format!("{cmd} definitions")
            }
            Input::Cmd(cmd, _) | Input::ServeOnly(cmd, _) => format!("{cmd} arguments"),
        };
        *kinds.entry(k).or_default() += 1;
    }
    eprintln!("bad input by kind: {kinds:?}");
    eprintln!(
        "bad input: {} cases, {runs} runs (standalone and serve), each a clear error with \
         errorcode 1 and an unchanged tree{}",
        cases.len(),
        if is_root() {
            "; engine confined to a read-only /"
        } else {
            ""
        }
    );
}

#[test]
fn the_snapshot_sees_a_real_change_and_the_guard_keeps_the_tree_writable() {
    // A good rmimage in the same confinement: the tree must change, and the snapshot says how.
    let c = cmd("rmimage", &["img"], "");
    let d = Dir::new();
    lay_out(&d, &c);
    let before = snapshot(d.path());
    let mut run = base_command(&d);
    run.args(["rmimage", "img", "--defs"]).arg(d.defs_path());
    let o = run.output().expect("run engine");
    assert!(o.status.success(), "{o:?}");
    let changes = diff(&before, &snapshot(d.path()));
    assert!(
        changes
            .iter()
            .any(|c| c == &format!("removed {IMG_DIR}/rootimg/etc/hostname")),
        "{changes:#?}"
    );
    // A changed mtime alone is seen too.
    let before = snapshot(d.path());
    let f = d.defs_path();
    let t = std::fs::metadata(&f)
        .expect("stat")
        .modified()
        .expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&f)
        .expect("open")
        .set_modified(t + Duration::from_secs(1))
        .expect("touch");
    assert_eq!(diff(&before, &snapshot(d.path())).len(), 1);
}

#[test]
fn the_guard_makes_the_host_read_only() {
    if !is_root() {
        crate::util::skip("the read-only guard needs root (mount namespace)");
        return;
    }
    // rmimage --xcatdef writes the definitions file back; one outside the temp tree must stay
    // as it is (the write fails), while the image files inside the tree go.
    let c = cmd("rmimage", &["img"], "");
    let d = Dir::new();
    lay_out(&d, &c);
    if std::fs::metadata(std::env::temp_dir()).expect("stat").dev()
        != std::fs::metadata("/").expect("stat").dev()
    {
        crate::util::skip("the temp directory is not on the root filesystem");
        return;
    }
    let outside =
        std::env::temp_dir().join(format!("xcat-imaged-guard-{}.stanza", std::process::id()));
    let text = std::fs::read_to_string(d.defs_path()).expect("read defs");
    std::fs::write(&outside, &text).expect("write outside");
    let mut run = base_command(&d);
    run.args(["rmimage", "img", "--xcatdef", "--defs"])
        .arg(&outside);
    let o = run.output().expect("run engine");
    let after = std::fs::read_to_string(&outside);
    let _ = std::fs::remove_file(&outside);
    assert_eq!(
        after.ok().as_deref(),
        Some(text.as_str()),
        "the file outside changed"
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
        "{o:?}"
    );
    assert!(
        !d.path().join(IMG_DIR).join("rootimg").exists(),
        "inside the tree is writable"
    );
}
