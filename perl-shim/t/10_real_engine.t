#!/usr/bin/perl
# The real engine, when $ENV{XCAT_IMAGED_ENGINE} names it (e.g. target/debug/xcat-imaged):
# first over the raw protocol, then through the bridge.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Spec;
use IO::Select;
use IPC::Open3 qw(open3);
use JSON::PP ();
use Test::More;
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie scratch);

my $ENGINE = $ENV{XCAT_IMAGED_ENGINE};
plan skip_all => 'set XCAT_IMAGED_ENGINE to an xcat-imaged binary to run these'
  unless defined $ENGINE && -f $ENGINE && -x _;

my $JSON = JSON::PP->new->utf8->canonical;
my $fd0  = next_fd();

# Runs one request over the raw protocol; calls are refused. Returns the decoded lines.
sub raw_session {
    my (%req) = @_;
    my $pid = open3(my $in, my $out, '>&STDERR', $ENGINE, 'serve');
    local $SIG{PIPE} = 'IGNORE';
    print {$in} $JSON->encode({ type => 'request', v => 1, args => [], %req }), "\n" or die "write: $!";
    my (@msgs, $buf);
    my $sel = IO::Select->new($out);
    $buf = q{};
  READ: while ($sel->can_read(20)) {
        my $n = sysread $out, $buf, 65_536, length $buf;
        last unless $n;
        while ($buf =~ s/\A([^\n]*)\n//) {
            my $m = $JSON->decode($1);
            push @msgs, $m;
            last READ if $m->{type} eq 'done';
            if ($m->{type} eq 'call') {
                print {$in} $JSON->encode({ type => 'reply', id => $m->{id}, ok => JSON::PP::false(), error => 'no tables in this test' }), "\n"
                  or die "write: $!";
            }
        }
    }
    close $in;
    close $out;
    waitpid $pid, 0;
    return (\@msgs, $?);
}

my ($msgs, $status) = raw_session(command => 'nosuchcommand');
my @errors = grep { $_->{type} eq 'error' } @{$msgs};
ok(@errors, 'raw: an unknown command gives an error') or diag explain $msgs;
ok((grep { $_->{errorcode} } @errors), '... with a non-zero errorcode');
is($msgs->[-1]{type}, 'done', '... then done');
ok($msgs->[-1]{errorcode}, '... with a non-zero errorcode');

($msgs, $status) = raw_session(command => 'rmimage', args => ['-h']);
my @usage = grep { $_->{type} eq 'info' && $_->{text} =~ /Usage:/ } @{$msgs};
ok(@usage, 'raw: rmimage -h gives an info with Usage:') or diag explain $msgs;
ok(!(grep { $_->{type} eq 'error' } @{$msgs}), '... and no error');
is_deeply($msgs->[-1], { type => 'done', errorcode => 0 }, '... and done errorcode 0');
is($status, 0, '... and the engine exits 0');

# Through the bridge.
my $r = run_bridge(engine => $ENGINE, request => { command => ['nosuchcommand'], arg => [], clienttype => ['cli'] });
ok((grep { $_->{error} && $_->{errorcode} && $_->{errorcode}[0] } @{ $r->{responses} }), 'bridge: an unknown command is an error with an errorcode')
  or diag explain $r->{responses};
ok(!(grep { ($_->{error}[0] // q{}) =~ /\Axcat-imaged (protocol error|ended without finishing)/ } @{ $r->{responses} }),
    '... from the engine, which finished properly');
clean_ok($r, 'nosuchcommand');

$r = run_bridge(engine => $ENGINE, request => { command => ['rmimage'], arg => ['-h'], clienttype => ['cli'], cwd => ['/'] });
ok((grep { $_->{info} && $_->{info}[0] =~ /Usage:/ } @{ $r->{responses} }), 'bridge: rmimage -h gives an info with Usage:')
  or diag explain $r->{responses};
ok(!(grep { exists $_->{errorcode} } @{ $r->{responses} }), '... and no errorcode at all');
clean_ok($r, 'rmimage -h');

# rmimage end to end: the real engine behind the bridge, tables from the doubles, files in a
# scratch management node. Every run gets its own lock directory.
use File::Path qw(make_path);
use File::Temp qw(tempdir);

sub node_layout {
    my $root = tempdir('imaged-real-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my %d = (root => $root, install => "$root/install", tftp => "$root/tftpboot", locks => "$root/locks");
    make_path(@d{qw(install tftp locks)});
    $d{dir} = "$d{install}/netboot/rhels9/x86_64/compute";
    make_path("$d{dir}/rootimg/etc", "$d{dir}/rootimg/usr/bin", "$d{tftp}/xcat/osimage/img");
    for my $f ("rootimg/etc/hostname", "kernel", "initrd-stateless.gz", "rootimg.cpio.gz") {
        open my $fh, '>', "$d{dir}/$f" or die "cannot write $d{dir}/$f: $!\n";
        print {$fh} "$f\n" or die "write: $!\n";
        close $fh or die "close: $!\n";
    }
    $d{tables} = {
        site       => [ { key => 'installdir', value => $d{install} }, { key => 'tftpdir', value => $d{tftp} } ],
        osimage    => [ { imagename => 'img', osvers => 'rhels9', osarch => 'x86_64', profile => 'compute', provmethod => 'netboot', imagetype => 'linux' },
                        { imagename => 'other', osvers => 'rhels8', osarch => 'x86_64', profile => 'compute', provmethod => 'netboot' } ],
        linuximage => [ { imagename => 'img', rootimgdir => $d{dir} }, { imagename => 'other', rootimgdir => '/nowhere' } ],
    };
    return \%d;
}

sub infos  { my ($r) = @_; return [ map { @{ $_->{info} } } grep { $_->{info} } @{ $r->{responses} } ]; }
sub errors { my ($r) = @_; return [ map { @{ $_->{error} } } grep { $_->{error} } @{ $r->{responses} } ]; }
sub codes  { my ($r) = @_; return [ map { @{ $_->{errorcode} } } grep { $_->{errorcode} } @{ $r->{responses} } ]; }

{
    my $d = node_layout();
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['rmimage'], arg => [ 'img', undef, '--xcatdef' ], clienttype => ['cli'], cwd => ['/'] },
    );
    is_deeply(
        infos($r),
        [
            "Removing directory $d->{dir}/rootimg",
            "Removing file $d->{dir}/kernel",
            "Removing file $d->{dir}/initrd-stateless.gz",
            "Removing file $d->{dir}/rootimg.cpio.gz",
            "Removing directory $d->{tftp}/xcat/osimage/img",
            'Image files have been removed successfully from this management node.',
            'Removing osimage definition for img.',
            'osimage definition for img is removed successfully.',
        ],
        'bridge: rmimage img --xcatdef gives the stock info lines in order (undef arg dropped)'
    ) or diag explain $r->{responses};
    is_deeply(codes($r), [], '... and no errorcode');
    ok(!-e "$d->{dir}/rootimg" && !-e "$d->{dir}/kernel" && -d $d->{dir}, '... the files are gone, the directory stays');
    is_deeply([ map { $_->{imagename} } @{ $r->{tables}{osimage} } ],    ['other'], '... the osimage row is deleted, others stay');
    is_deeply([ map { $_->{imagename} } @{ $r->{tables}{linuximage} } ], ['other'], '... the linuximage row too');
    clean_ok($r, 'rmimage --xcatdef');
}

{
    my $d = node_layout();
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['rmimage'], arg => ['sles15-x86_64-netboot-compute'], clienttype => ['ws'] },
    );
    is_deeply(errors($r), ["Image directory $d->{install}/netboot/sles15/x86_64/compute does not exist"],
        'bridge: a missing image directory is the stock error (REST request, no cwd)') or diag explain $r->{responses};
    is_deeply(codes($r), [1], '... with errorcode 1');
    clean_ok($r, 'rmimage missing');

    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['rmimage'], arg => ['-v', 'img'], clienttype => ['ws'] },
    );
    is_deeply(errors($r), ['Invalid image name -v'], 'bridge: the z/VM CGI\'s rmimage -v img gives the stock error');
    ok(-e "$d->{dir}/rootimg/etc/hostname", '... and removes nothing');
}

{
    # Cancellation: the engine waits for a slow table reply when the bridge gets SIGTERM (as
    # xcatd sends it when the client aborts); the engine stops, says so, and nothing is removed.
    my $d = node_layout();
    local $SIG{ALRM} = sub { kill 'TERM', $$ };
    alarm 1;
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks}, XCAT_TEST_TABLE_DELAY => 3 },
        request => { command => ['rmimage'], arg => ['img'], clienttype => ['cli'], cwd => ['/'] },
    );
    alarm 0;
    is_deeply(errors($r), ['interrupted'], 'bridge: SIGTERM cancels the real engine') or diag explain $r->{responses};
    is_deeply(codes($r), [1], '... with errorcode 1');
    ok(-e "$d->{dir}/rootimg/etc/hostname" && -e "$d->{dir}/kernel", '... and nothing was removed');
    ok($r->{elapsed} < 15, '... promptly');
    clean_ok($r, 'rmimage cancelled');
}

{
    # packimage through the bridge: tables from the doubles (passwd included, so the root hash
    # comes from crypt_system_password), args in REST's order with an undef for an empty flag.
    my $d = node_layout();
    make_path("$d->{install}/postscripts");
    for my $f ("$d->{install}/postscripts/xcatdsklspost", "$d->{dir}/rootimg/etc/shadow") {
        open my $fh, '>', $f or die "cannot write $f: $!\n";
        print {$fh} ($f =~ /shadow/ ? "root:!:1::::::\nbin:*:1::::::\n" : "#!/bin/sh\n") or die "write: $!\n";
        close $fh or die "close: $!\n";
    }
    $d->{tables}{passwd} = [ { key => 'system', username => 'root', password => 'secret' } ];
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['packimage'], arg => [ 'img', '--nosyncfiles', undef, '--method', 'tar' ], clienttype => ['ws'] },
    );
    is_deeply(codes($r), [], 'bridge: packimage -m tar succeeds') or diag explain $r->{responses};
    my @data = map { @{ $_->{data} } } grep { $_->{data} } @{ $r->{responses} };
    is_deeply(\@data, ["Packing contents of $d->{dir}/rootimg"], '... with the stock data line');
    ok((grep { $_ eq 'archive method:tar' } @{ infos($r) }), '... and archive method:tar');
    ok(-f "$d->{dir}/rootimg.tar.gz" && !-e "$d->{dir}/rootimg.cpio.gz", '... rootimg.tar.gz replaces the older cpio.gz');
    my $x = tempdir('imaged-x-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    is(system('tar', '-xzf', "$d->{dir}/rootimg.tar.gz", '-C', $x), 0, '... GNU tar extracts it');
    open my $sh, '<', "$x/etc/shadow" or die "cannot read the packed shadow: $!\n";
    my $first = <$sh>;
    close $sh or die "close: $!\n";
    like($first, qr/\Aroot:\$5\$[^:]+:13880:0:99999:7:::$/, '... root hash from crypt_system_password');
    ok(-f "$x/opt/xcat/xcatinfo" && !-e "$d->{dir}/rootimg/opt/xcat", '... xcatinfo injected, tree untouched');
    clean_ok($r, 'packimage');
}

{
    # imgexport end to end: the real engine streams a bundle from a scratch management node
    # (tables from the doubles) into the client's cwd; GNU tar reads it back.
    my $d   = node_layout();
    my $cwd = "$d->{root}/cwd";
    make_path($cwd, "$d->{root}/lists");
    my $pkglist = "$d->{root}/lists/compute.rhels9.x86_64.pkglist";
    open my $fh, '>', $pkglist or die "cannot write $pkglist: $!\n";
    print {$fh} "bash\n" or die "write: $!\n";
    close $fh or die "close: $!\n";
    $d->{tables}{linuximage}[0]{pkglist} = $pkglist;
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['imgexport'], arg => [ 'img', undef, '--checksum' ], clienttype => ['cli'], cwd => [$cwd] },
    );
    my @data = map { @{ $_->{data} } } grep { $_->{data} } @{ $r->{responses} };
    is_deeply(
        [ @data[ 0 .. 5 ], $data[-1] ],
        [
            "Exporting img to $cwd...",
            "$d->{dir}/kernel",
            "$d->{dir}/initrd-stateless.gz",
            "$d->{dir}/rootimg.cpio.gz",
            $pkglist,
            'Compressing img bundle.  Please be patient.',
            'Done!',
        ],
        'bridge: imgexport gives the stock data lines in order, Done! last'
    ) or diag explain $r->{responses};
    is_deeply(codes($r), [], '... and no errorcode');
    ok((grep { /\ABundle \Q$cwd\E\/img\.tgz: 6 members/ } @{ infos($r) }), '... and says where the bundle is')
      or diag explain infos($r);
    ok(-f "$cwd/img.tgz" && -f "$cwd/img.tgz.sha256", '... the bundle and its checksums are in the cwd');
    opendir my $dh, $cwd or die "cannot read $cwd: $!\n";
    is_deeply([ sort grep { !/\A\.\.?\z/ } readdir $dh ], [ 'img.tgz', 'img.tgz.sha256' ], '... and nothing else');
    closedir $dh or die "closedir: $!\n";
    my $pid = open my $tar, '-|', 'tar', '-tzf', "$cwd/img.tgz";
    my @members = $pid ? map { chomp; $_ } <$tar> : ();
    close $tar;
    is_deeply(
        [ sort @members ],
        [ sort map { "./img/$_" } '', qw(manifest.xml kernel initrd-stateless.gz rootimg.cpio.gz compute.rhels9.x86_64.pkglist) ],
        '... with the image directory, the manifest and the four files'
    );
    clean_ok($r, 'imgexport');

    # Over REST (no cwd) the bundle goes to <installdir>/export, and the output says so.
    $r = run_bridge(
        engine  => $ENGINE,
        tables  => $d->{tables},
        env     => { XCAT_IMAGED_LOCK_DIR => $d->{locks} },
        request => { command => ['imgexport'], arg => ['img'], clienttype => ['ws'] },
    );
    my @rest = map { @{ $_->{data} } } grep { $_->{data} } @{ $r->{responses} };
    is($rest[0], "Exporting img to $d->{install}/export...", 'bridge: a REST imgexport names its default directory');
    ok(-f "$d->{install}/export/img.tgz", '... and writes the bundle there');
    is_deeply(codes($r), [], '... without an errorcode');
}

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
