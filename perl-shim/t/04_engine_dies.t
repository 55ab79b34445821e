#!/usr/bin/perl
# An engine that ends without "done" yields one error saying how it ended; a failing start,
# an engine that will not exit, and a dying callback leave nothing behind.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Spec;
use Test::More;
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie scratch);

my $fd0 = next_fd();

my $r = run_bridge(script => [ { send => { type => 'info', text => 'working' } }, { exit => 3 } ]);
is_deeply(
    $r->{responses},
    [ { info => ['working'] }, { error => ['xcat-imaged ended without finishing: exit status 3'], errorcode => [1] } ],
    'exit 3 without done'
);
clean_ok($r, 'exit 3');

$r = run_bridge(script => [ { exit => 0 } ]);
is_deeply($r->{responses}, [ { error => ['xcat-imaged ended without finishing: exit status 0'], errorcode => [1] } ],
    'exit 0 without done is still a failure');

$r = run_bridge(script => [ { send => { type => 'sinfo', text => '10%' } }, { kill_self => 'KILL' } ]);
is_deeply(
    $r->{responses},
    [ { sinfo => ['10%'] }, { error => ['xcat-imaged ended without finishing: killed by signal 9 (KILL)'], errorcode => [1] } ],
    'killed by SIGKILL'
);
clean_ok($r, 'SIGKILL');

$r = run_bridge(script => [ { kill_self => 'SEGV' } ]);
like($r->{responses}[0]{error}[0], qr/\Axcat-imaged ended without finishing: killed by signal 11 \(SEGV\)(, core dumped)?\z/, 'killed by SIGSEGV');

# It never reads the request and exits at once: the write fails or lands in the pipe; either way
# the exit status is what the client hears.
$r = run_bridge(env => { FAKE_ENGINE_NO_READ => 1 }, script => [ { exit => 5 } ]);
is_deeply($r->{responses}, [ { error => ['xcat-imaged ended without finishing: exit status 5'], errorcode => [1] } ],
    'an engine that exits without reading');
clean_ok($r, 'no read');

# exec itself fails: the interpreter named by the #! line does not exist.
my $bad = File::Spec->catfile(scratch(), 'bad-interpreter');
open my $fh, '>', $bad or die "$bad: $!";
print {$fh} "#!/nonexistent/interpreter\n" or die;
close $fh or die;
chmod 0755, $bad or die;
$r = run_bridge(engine => $bad);
is_deeply($r->{responses}, [ { error => ["xcat-imaged engine could not be started: $bad: No such file or directory"], errorcode => [1] } ],
    'exec failure is reported with its reason');
clean_ok($r, 'exec failure');

# Closes its output but keeps running: killed after the grace.
$r = run_bridge(grace => 1, script => [ { close_stdout => 1 }, { sleep => 30 } ]);
is_deeply($r->{responses}, [ { error => ['xcat-imaged closed its output without finishing and was killed after 1 second'], errorcode => [1] } ],
    'closed stdout, still running');
cmp_ok($r->{elapsed}, '<', 10, '... and not waited for');
clean_ok($r, 'closed stdout');

# The engine exits while something it started still holds the pipe: the exit status still comes.
$r = run_bridge(script => [ { holder => 30 }, { exit => 2 } ]);
is_deeply($r->{responses}, [ { error => ['xcat-imaged ended without finishing: exit status 2'], errorcode => [1] } ],
    'engine gone, pipe held open by its child');
cmp_ok($r->{elapsed}, '<', 15, '... found out without waiting for the holder (30 s)');
clean_ok($r, 'holder');

# done, then it does not exit: killed after the grace, with a warning.
$r = run_bridge(grace => 1, script => [ { ignore => ['TERM'] }, { send => { type => 'done', errorcode => 0 } }, { sleep => 30 } ]);
is_deeply($r->{responses}, [ { warning => ['xcat-imaged did not exit within 1 second after finishing and was killed'] } ],
    'done but no exit');
cmp_ok($r->{elapsed}, '<', 10, '... not waited for');
clean_ok($r, 'done, no exit');

# The callback dies (as xcatd's may when the client is gone): the exception comes out of
# relay, after the engine was stopped and reaped.
my $calls = 0;
$r = run_bridge(
    grace    => 2,
    callback => sub { $calls++; die "callback broke\n" },
    script   => [ { trap => ['TERM'] }, { send => { type => 'info', text => 'x' } }, { wait_signal => 10 }, { exit => 0 } ]
);
is($r->{exception}, "callback broke\n", 'the exception from the callback is rethrown');
is($calls, 1, 'the callback is not called again after it died');
is_deeply($r->{events}, ['#signal TERM'], 'the engine was asked to stop');
cmp_ok($r->{elapsed}, '<', 5, '... and exited without being killed');
clean_ok($r, 'dying callback');

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
