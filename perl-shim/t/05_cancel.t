#!/usr/bin/perl
# SIGINT/SIGTERM while relaying mean cancel: the engine gets SIGTERM and has the grace period
# to send done; after that it is killed. The caller's own handlers are back afterwards.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Spec;
use POSIX ();
use Test::More;
use Time::HiRes ();
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie scratch read_json write_json cli_request);

my $fd0 = next_fd();
my $mine = sub { };
local $SIG{TERM} = $mine;
local $SIG{INT}  = $mine;

# --- SIGTERM to the bridge's process; the engine cancels and reports done errorcode 1 --------
my $r = run_bridge(
    script => [
        { trap => [ 'TERM', 'INT' ] },
        { send => { type => 'info', text => 'started' } },
        { signal_parent => 'TERM' },
        { wait_signal => 10 },
        { send => { type => 'error', text => 'cancelled', errorcode => 1 } },
        { send => { type => 'done', errorcode => 1 } },
    ]
);
is_deeply($r->{responses}, [ { info => ['started'] }, { error => ['cancelled'], errorcode => [1] } ],
    'messages up to the engine\'s own cancellation error; nothing added');
is_deeply($r->{events}, ['#signal TERM'], 'the engine got SIGTERM from the bridge');
cmp_ok($r->{elapsed}, '<', 5, 'promptly');
is($SIG{TERM}, $mine, 'the caller\'s TERM handler is back');
is($SIG{INT},  $mine, 'the caller\'s INT handler is back');
clean_ok($r, 'TERM');

# --- SIGINT likewise -----------------------------------------------------------------------
$r = run_bridge(
    script => [
        { trap => ['TERM'] }, { signal_parent => 'INT' }, { wait_signal => 10 },
        { send => { type => 'done', errorcode => 1 } },
    ]
);
is_deeply($r->{events}, ['#signal TERM'], 'SIGINT to the bridge: the engine gets SIGTERM');
is_deeply($r->{responses}, [ { error => ['xcat-imaged finished with errorcode 1 without reporting an error'], errorcode => [1] } ],
    'a bare failing done still fails');

# --- it answers calls while cancelling ----------------------------------------------------
$r = run_bridge(
    tables => { site => [ { key => 'installdir', value => '/i' } ] },
    script => [
        { trap => ['TERM'] }, { signal_parent => 'TERM' }, { wait_signal => 10 },
        { call => { method => 'site.get', params => { key => 'installdir' } } },
        { send => { type => 'done', errorcode => 0 } },
    ]
);
is($r->{replies}[0]{result}, '/i', 'calls are still answered during cancellation');
is_deeply($r->{responses}, [], 'a clean done after cancellation adds nothing');

# --- the engine dies of the TERM ---------------------------------------------------------------
$r = run_bridge(script => [ { signal_parent => 'TERM' }, { sleep => 30 } ]);
is_deeply($r->{responses}, [ { error => ['xcat-imaged ended without finishing: killed by signal 15 (TERM)'], errorcode => [1] } ],
    'an engine killed by the forwarded TERM');
clean_ok($r, 'dies of TERM');

# --- the engine ignores TERM: SIGKILL after the grace -------------------------------------
$r = run_bridge(
    grace  => 1,
    script => [ { ignore => [ 'TERM', 'INT' ] }, { signal_parent => 'TERM' }, { send => { type => 'info', text => 'still here' } }, { sleep => 30 } ]
);
is_deeply(
    $r->{responses},
    [ { info => ['still here'] }, { error => ['xcat-imaged did not stop within 1 second after cancellation and was killed'], errorcode => [1] } ],
    'an engine ignoring TERM is killed after the grace'
);
cmp_ok($r->{elapsed}, '>=', 0.9, 'not before the grace');
cmp_ok($r->{elapsed}, '<', 6, 'not much after it');
clean_ok($r, 'ignores TERM');

# --- like xcatd: the plugin child leads a process group; INT then TERM go to the group -------
{
    my $ready = File::Spec->catfile(scratch(), 'ready');
    my $out   = File::Spec->catfile(scratch(), 'group-result.json');
    unlink $ready, $out;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        setpgrp 0, 0;
        my $res = eval {
            run_bridge(
                script => [
                    { trap => [ 'INT', 'TERM' ] }, { touch => $ready }, { wait_signal => 10 }, { sleep => 0.5 },
                    { send => { type => 'error', text => 'cancelled', errorcode => 1 } },
                    { send => { type => 'done',  errorcode => 1 } },
                ]
            );
        };
        write_json($out, $res ? { responses => $res->{responses}, events => $res->{events}, fd => [ $res->{fd_before}, $res->{fd_after} ], zombie => $res->{zombie} } : { died => "$@" });
        POSIX::_exit(0);
    }
    my $deadline = Time::HiRes::time() + 10;
    Time::HiRes::sleep(0.02) until -e $ready || Time::HiRes::time() > $deadline;
    ok(-e $ready, 'the engine in the group started');
    kill 'INT', -$pid;     # what xcatd's connection process does on a client abort
    kill 'TERM', -$pid;
    waitpid $pid, 0;
    is($?, 0, 'the bridge process survived INT and TERM to its group');
    my $res = read_json($out) // {};
    is_deeply($res->{responses}, [ { error => ['cancelled'], errorcode => [1] } ], 'the engine reported its cancellation');
    my %seen = map { $_ => 1 } @{ $res->{events} || [] };
    ok($seen{'#signal INT'} && $seen{'#signal TERM'}, 'the engine, in the same group, got INT and TERM');
    is($res->{fd}[1], $res->{fd}[0], 'group: no descriptor leaked');
    is($res->{zombie}, -1, 'group: no child left');
}

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
