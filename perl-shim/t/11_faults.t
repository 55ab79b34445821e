#!/usr/bin/perl
# Faults and load through the bridge. An engine that hangs (reads the request, never answers):
# the bridge's cancellation (the SIGTERM xcatd's connection process sends on a client abort)
# ends it, also when it ignores SIGTERM, and reports an error. Then, when $ENV{XCAT_IMAGED_ENGINE}
# names the real engine: 8 packimage requests on 8 images at once, each in its own forked
# process as xcatd runs them, all succeed and their archives hold the trees; 2 on one image:
# one packs, the other gets xCAT's lock message; the engines' peak memory (VmHWM) and open
# descriptors, sampled from /proc during the runs, stay under stated bounds.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Cwd qw(realpath);
use Digest::SHA ();
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use POSIX ();
use Test::More;
use Time::HiRes ();
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie scratch read_json write_json);

my $fd0 = next_fd();

# Bounds for one engine packing an image (measured: see docs/reliability.md). Memory must not
# grow with the data: the engine packing ten times more holds at most $MAX_GROWTH_KB more. The
# compressor's pipeline is a fixed cost that a 4 MiB image does not fill yet: 2 segments of up
# to 4 MiB per thread, each with its output (measured: 20 MiB more at 40 MiB; flat from there,
# 193 MiB against 1 GB within 11 MiB in docs/performance.md).
my $MAX_HWM_KB    = 64 * 1024;
my $MAX_GROWTH_KB = 32 * 1024;
my $MAX_FDS       = 32;

sub write_file {
    my ($path, $data) = @_;
    open my $fh, '>:raw', $path or die "cannot write $path: $!\n";
    print {$fh} $data or die "cannot write $path: $!\n";
    close $fh or die "cannot write $path: $!\n";
    return;
}

# A stand-in engine: reads the request, tells the test, then never answers.
sub hanging_engine {
    my $path = File::Spec->catfile(scratch(), 'hanging-engine');
    write_file($path, <<"EOF");
#!$^X
use strict;
use warnings;
\$SIG{TERM} = 'IGNORE' if \$ENV{HANG_IGNORE_TERM};
my \$request = <STDIN>;
open my \$ready, '>', \$ENV{HANG_READY} or die "cannot write \$ENV{HANG_READY}: \$!\\n";
print {\$ready} "\$\$\\n" or die "write: \$!\\n";
close \$ready or die "close: \$!\\n";
sleep 1 while 1;
EOF
    chmod 0755, $path or die "cannot chmod $path: $!\n";
    return $path;
}

# Like xcatd's connection process on a client abort: a SIGTERM to the plugin process once the
# engine is waiting. The helper is a grandchild, so the bridge's "no child left" check sees
# only the bridge's own children.
sub term_when_ready {
    my ($ready, $target) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::_exit(0) if fork;
        my $deadline = Time::HiRes::time() + 20;
        Time::HiRes::sleep(0.02) until -s $ready || Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.2);    # the engine is now blocked, waiting for nothing
        kill 'TERM', $target;
        POSIX::_exit(0);
    }
    waitpid $pid, 0;
    return;
}

sub engine_pid_from {
    my ($ready) = @_;
    open my $fh, '<', $ready or return;
    my $pid = <$fh>;
    close $fh or die "close: $!\n";
    chomp $pid;
    return $pid;
}

my $faults = 0;
for my $case ([ 'dies of the TERM', 0, qr/\Axcat-imaged ended without finishing: killed by signal 15 \(TERM\)\z/ ],
              [ 'ignores the TERM', 1, qr/\Axcat-imaged did not stop within 1 second after cancellation and was killed\z/ ]) {
    my ($name, $ignore, $want) = @{$case};
    my $ready = File::Spec->catfile(scratch(), "hang-ready-$ignore");
    unlink $ready;
    term_when_ready($ready, $$);
    my $r = run_bridge(engine => hanging_engine(), grace => 1, env => { HANG_READY => $ready, HANG_IGNORE_TERM => $ignore });
    $faults++;
    my $engine = engine_pid_from($ready);
    ok($engine, "hanging engine ($name): it got the request");
    my @errors = map { @{ $_->{error} } } grep { $_->{error} } @{ $r->{responses} };
    is(scalar @errors, 1, "hanging engine ($name): one error") or diag explain $r->{responses};
    like($errors[0] // q{}, $want, "hanging engine ($name): the bridge says what happened");
    is_deeply([ map { @{ $_->{errorcode} } } grep { $_->{errorcode} } @{ $r->{responses} } ], [1], "hanging engine ($name): errorcode 1");
    ok(!kill(0, $engine), "hanging engine ($name): the engine is gone");
    cmp_ok($r->{elapsed}, '<', 15, "hanging engine ($name): the bridge returned");
    clean_ok($r, "hanging engine ($name)");
}

my $ENGINE = $ENV{XCAT_IMAGED_ENGINE};
unless (defined $ENGINE && -f $ENGINE && -x _) {
    diag("faults: bridge: $faults hanging engines cancelled (set XCAT_IMAGED_ENGINE for the load tests)");
    is(next_fd(), $fd0, 'no descriptor leaked over the file');
    done_testing();
    exit;
}
$ENGINE = realpath($ENGINE);

# ---- a management node with N images -------------------------------------------------------

my $MIB = 1024 * 1024;

sub random_bytes {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or die "cannot read /dev/urandom: $!\n";
    my $buf;
    my $got = read $fh, $buf, $n;
    close $fh or die "close: $!\n";
    die "short read from /dev/urandom\n" unless $got == $n;
    return $buf;
}

# Images named by the keys of %mib, each with that many MiB of random data.
sub node_with_images {
    my (%mib) = @_;
    my @names = sort keys %mib;
    my $root = tempdir('imaged-load-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my %d = (root => $root, install => "$root/install", locks => "$root/locks", dirs => {}, sums => {});
    make_path("$d{install}/postscripts", $d{locks});
    write_file("$d{install}/postscripts/xcatdsklspost", "#!/bin/sh\n");
    $d{tables} = { site => [ { key => 'installdir', value => $d{install} }, { key => 'tftpdir', value => "$root/tftpboot" } ], osimage => [], linuximage => [] };
    for my $img (@names) {
        my $dir = "$d{install}/netboot/rhels9/x86_64/$img";
        make_path("$dir/rootimg/etc", "$dir/rootimg/var/lib");
        write_file("$dir/rootimg/etc/hostname", "$img\n");
        write_file("$dir/rootimg/etc/shadow", "root:!:1::::::\n");
        my $bulk = random_bytes($mib{$img} * $MIB);
        write_file("$dir/rootimg/var/lib/bulk", $bulk);
        $d{sums}{$img} = Digest::SHA::sha256_hex($bulk);
        $d{dirs}{$img} = $dir;
        push @{ $d{tables}{osimage} }, { imagename => $img, osvers => 'rhels9', osarch => 'x86_64', profile => $img, provmethod => 'netboot', imagetype => 'linux' };
        push @{ $d{tables}{linuximage} }, { imagename => $img, rootimgdir => $dir };
    }
    return \%d;
}

# One packimage through the bridge in a forked process, as xcatd runs a request; the result
# goes to a JSON file. Returns the pid.
sub pack_in_child {
    my ($d, $img, $method, $out) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    return $pid if $pid;
    my $res = eval {
        my $r = run_bridge(
            engine  => $ENGINE,
            tables  => $d->{tables},
            env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
            request => { command => ['packimage'], arg => [ $img, '--method', $method ], clienttype => ['cli'], cwd => ['/'] },
        );
        {
            errors => [ map { @{ $_->{error} } } grep { $_->{error} } @{ $r->{responses} } ],
            codes  => [ map { @{ $_->{errorcode} } } grep { $_->{errorcode} } @{ $r->{responses} } ],
            fd     => [ $r->{fd_before}, $r->{fd_after} ],
            zombie => $r->{zombie},
        };
    } // { died => "$@" };
    write_json($out, $res);
    POSIX::_exit(0);
    return;
}

# Engines of this test (found by their lock directory; a child an engine has forked and not yet
# exec'd is left out), sampled until every child is done. %image_of maps a bridge process to
# its image; each engine is tied to the image of its parent.
sub sample_engines {
    my ($d, %image_of) = @_;
    my $locks    = $d->{locks};
    my @children = keys %image_of;
    my %seen;
    my %left = map { $_ => 1 } @children;
    while (%left) {
        for my $pid (keys %left) {
            delete $left{$pid} if waitpid($pid, POSIX::WNOHANG()) == $pid;
        }
        opendir my $proc, '/proc' or die "cannot read /proc: $!\n";
        for my $pid (grep { /\A\d+\z/ } readdir $proc) {
            my $exe = readlink "/proc/$pid/exe";
            next unless defined $exe && $exe eq $ENGINE;
            open my $env, '<:raw', "/proc/$pid/environ" or next;
            my $text = do { local $/ = undef; <$env> } // q{};
            close $env or next;
            next unless index($text, "XCAT_IMAGED_LOCK_DIR=$locks\0") >= 0;
            open my $st, '<', "/proc/$pid/status" or next;
            my @status = <$st>;
            close $st or next;
            my ($ppid) = map { /\APPid:\s+(\d+)/ ? $1 : () } @status;
            my $pexe = defined $ppid ? readlink "/proc/$ppid/exe" : undef;
            next if defined $pexe && $pexe eq $ENGINE;
            my $s = $seen{$pid} //= { hwm => 0, fds => 0, threads => 0, img => $image_of{ $ppid // 0 } };
            if (opendir my $fd, "/proc/$pid/fd") {
                my @fds = grep { /\A\d+\z/ } readdir $fd;
                closedir $fd or die "closedir: $!\n";
                $s->{fds} = @fds if @fds > $s->{fds};
            }
            {
                for my $l (@status) {
                    $s->{hwm}     = $1 if $l =~ /\AVmHWM:\s+(\d+) kB/ && $1 > $s->{hwm};
                    $s->{threads} = $1 if $l =~ /\AThreads:\s+(\d+)/  && $1 > $s->{threads};
                }
            }
        }
        closedir $proc or die "closedir: $!\n";
        Time::HiRes::sleep(0.01);
    }
    return \%seen;
}

sub max_of { my ($seen, $k) = @_; my $m = 0; for (values %{$seen}) { $m = $_->{$k} if $_->{$k} > $m; } return $m; }

# Extracts an archive with the node's tools (tar; gzip -cd | cpio -idum) and returns the
# digest of var/lib/bulk in it.
sub archive_sum {
    my ($dir, $method) = @_;
    my $x = tempdir('imaged-x-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    if ($method eq 'tar') {
        system('tar', '-xzf', "$dir/rootimg.tar.gz", '-C', $x) == 0 or return 'tar failed';
    } else {
        my $raw = "$x.cpio";
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open STDOUT, '>', $raw or POSIX::_exit(2);
            exec { 'gzip' } 'gzip', '-dc', "$dir/rootimg.cpio.gz" or POSIX::_exit(127);
        }
        waitpid $pid, 0;
        return 'gzip failed' if $?;
        $pid = fork;
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open STDIN, '<', $raw or POSIX::_exit(2);
            chdir $x or POSIX::_exit(2);
            exec { 'cpio' } 'cpio', '-idum', '--quiet' or POSIX::_exit(127);
        }
        waitpid $pid, 0;
        unlink $raw;
        return 'cpio failed' if $?;
    }
    open my $fh, '<:raw', "$x/var/lib/bulk" or return 'no var/lib/bulk';
    my $sha = Digest::SHA->new(256);
    $sha->addfile($fh);
    close $fh or die "close: $!\n";
    return $sha->hexdigest;
}

# ---- 8 at once ------------------------------------------------------------------------------

{
    # One image with ten times the data of the others.
    my @imgs = map {"img$_"} 0 .. 7;
    my %mib  = map { $_ => ($_ eq 'img0' ? 40 : 4) } @imgs;
    my $d    = node_with_images(%mib);
    my %method = map { $imgs[$_] => ($_ % 2 ? 'tar' : 'cpio') } 0 .. $#imgs;
    my $t0 = Time::HiRes::time();
    my %out;
    my %image_of;
    for my $img (@imgs) {
        $out{$img} = File::Spec->catfile($d->{root}, "$img.json");
        $image_of{ pack_in_child($d, $img, $method{$img}, $out{$img}) } = $img;
    }
    my $seen = sample_engines($d, %image_of);
    my $secs = Time::HiRes::time() - $t0;
    my $ok = 0;
    for my $img (@imgs) {
        my $res = read_json($out{$img}) // { died => 'no result' };
        is($res->{died}, undef, "8 at once: $img: the bridge process ran");
        is_deeply($res->{codes}, [], "8 at once: $img: no errorcode") or diag explain $res;
        is($res->{fd}[1], $res->{fd}[0], "8 at once: $img: no descriptor leaked in the bridge");
        is($res->{zombie}, -1, "8 at once: $img: no child left");
        my $file = $method{$img} eq 'tar' ? 'rootimg.tar.gz' : 'rootimg.cpio.gz';
        opendir my $dh, $d->{dirs}{$img} or die "cannot read $d->{dirs}{$img}: $!\n";
        my @names = sort grep { !/\A\.\.?\z/ } readdir $dh;
        closedir $dh or die "closedir: $!\n";
        is_deeply(\@names, [ '.packcache', 'rootimg', $file ], "8 at once: $img: one archive, no temp file");
        opendir my $ch, "$d->{dirs}{$img}/.packcache" or die "cannot read the segment cache of $img: $!\n";
        my @index = grep { !/\A\.\.?\z/ } readdir $ch;
        closedir $ch or die "closedir: $!\n";
        is_deeply(\@index, ["$file.idx"], "8 at once: $img: the segment cache holds only this archive's index");
        my $sum = archive_sum($d->{dirs}{$img}, $method{$img});
        is($sum, $d->{sums}{$img}, "8 at once: $img: the archive extracts to its own tree");
        $ok++ if $sum eq $d->{sums}{$img} && !@{ $res->{codes} || [1] };
    }
    is(scalar keys %{$seen}, 8, '8 at once: all 8 engines were sampled while they ran');
    my ($hwm, $fds, $thr) = (max_of($seen, 'hwm'), max_of($seen, 'fds'), max_of($seen, 'threads'));
    cmp_ok($hwm, '<', $MAX_HWM_KB, "8 at once: peak RSS of an engine ${hwm} kB, under $MAX_HWM_KB kB");
    cmp_ok($fds, '<', $MAX_FDS, "8 at once: at most $fds open descriptors in an engine, under $MAX_FDS");
    my %by_img = map { ($_->{img} // 'unknown') => $_->{hwm} } values %{$seen};
    my @small = sort { $a <=> $b } map { $by_img{$_} // () } grep { $_ ne 'img0' } @imgs;
    ok(defined $by_img{img0} && @small == 7, '8 at once: every engine was tied to its image') or diag explain $seen;
    my $growth = ($by_img{img0} // 0) - ($small[-1] // 0);
    cmp_ok($growth, '<', $MAX_GROWTH_KB, "8 at once: 40 MiB instead of 4 MiB costs the engine $growth kB more, under $MAX_GROWTH_KB kB");
    diag(sprintf 'faults: bridge: 8 concurrent packimage (1 x 40 MiB, 7 x 4 MiB): %d ok, %.1f s; engine peak VmHWM %d kB (40 MiB image %d kB, 4 MiB images %d-%d kB), max fds %d, max threads %d',
        $ok, $secs, $hwm, $by_img{img0} // 0, $small[0] // 0, $small[-1] // 0, $fds, $thr);
}

# ---- 2 on one image -------------------------------------------------------------------------

{
    my $d   = node_with_images(img => 24);
    my $dir = $d->{dirs}{img};
    my ($a_out, $b_out) = map { File::Spec->catfile($d->{root}, "$_.json") } qw(a b);
    my $a = pack_in_child($d, 'img', 'cpio', $a_out);
    # The second request comes once the first holds the lock and is writing its archive.
    my $deadline = Time::HiRes::time() + 60;
    my $writing;
    until ($writing || Time::HiRes::time() > $deadline) {
        opendir my $dh, $dir or die "cannot read $dir: $!\n";
        $writing = grep { /\A\.rootimg\..*\.tmp\z/ } readdir $dh;
        closedir $dh or die "closedir: $!\n";
        Time::HiRes::sleep(0.005) unless $writing;
    }
    ok($writing, 'same image: the first pack is writing');
    my $b = pack_in_child($d, 'img', 'cpio', $b_out);
    waitpid $_, 0 for $a, $b;
    my ($ra, $rb) = map { read_json($_) // {} } $a_out, $b_out;
    is_deeply($ra->{codes}, [], 'same image: the first succeeds') or diag explain $ra;
    is_deeply($rb->{codes}, [1], 'same image: the second is refused with errorcode 1') or diag explain $rb;
    like($rb->{errors}[0] // q{}, qr/\Afailed to acquire lock, seems there is another genimage\/packimage\/rmimage process \d* running on root image dir "\Q$dir\E\/rootimg"\z/,
        "same image: ... with xCAT's lock message") or diag explain $rb;
    is(archive_sum($dir, 'cpio'), $d->{sums}{img}, 'same image: the archive is whole');
    diag('faults: bridge: 2 packimage on one image: 1 packed, 1 refused with the lock message');
}

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
