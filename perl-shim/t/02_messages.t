#!/usr/bin/perl
# Engine messages map to callback payloads one to one; the request line carries what xcatd gave.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use ImagedTest qw(run_bridge clean_ok cli_request rest_request next_fd no_zombie);

my $fd0 = next_fd();
local $::XCATROOT = '/opt/xcat-test';

# --- every message type ------------------------------------------------------------------
my $r = run_bridge(
    script => [
        { send => { type => 'info',    text => 'an info' } },
        { send => { type => 'data',    text => 'some data' } },
        { send => { type => 'warning', text => 'a warning' } },
        { send => { type => 'sinfo',   text => '50%' } },
        { send => { type => 'error',   text => 'it failed', errorcode => 3 } },
        { send => { type => 'done',    errorcode => 3 } },
    ]
);
is_deeply(
    $r->{responses},
    [
        { info    => ['an info'] },
        { data    => ['some data'] },
        { warning => ['a warning'] },
        { sinfo   => ['50%'] },
        { error   => ['it failed'], errorcode => [3] },
    ],
    'info, data, warning, sinfo and error map to their callback keys; done adds nothing'
);
clean_ok($r, 'messages');

# --- the request line (CLI) ----------------------------------------------------------------
is(
    $r->{request_line},
    '{"type":"request","v":1,"command":"rmimage","args":["img","-v"],"cwd":"/client/cwd","user":"root",'
      . '"clienttype":"cli","environment":{"XCAT_EMPTY":"","XCAT_FOO":"bar"},"xcatroot":"/opt/xcat-test"}',
    'CLI request line: undef args dropped, environment flattened, fields in protocol order'
);

# --- REST: no cwd, no environment ------------------------------------------------------------
$r = run_bridge(request => rest_request(), script => [ { send => { type => 'done', errorcode => 0 } } ]);
is_deeply(
    $r->{request},
    {
        type => 'request', v => 1, command => 'packimage', args => [ 'img', '--method', 'tar', '--nosyncfiles' ],
        user => 'wsuser', clienttype => 'ws', xcatroot => '/opt/xcat-test'
    },
    'REST request: no cwd, no environment, the undef of an empty flag dropped'
);
is_deeply($r->{responses}, [], 'a clean done sends nothing');
clean_ok($r, 'rest');

# --- user falls back to username; scalars from do_request callers; no clienttype -----------
$r = run_bridge(
    request => { command => 'rmimage', arg => 'img', username => ['alice'] },
    script  => [ { send => { type => 'done', errorcode => 0 } } ]
);
is_deeply($r->{request}, { type => 'request', v => 1, command => 'rmimage', args => ['img'], user => 'alice', xcatroot => '/opt/xcat-test' },
    'user from username when _xcat_authname is absent; plain scalars accepted');

# --- _xcat_authname wins over username ---------------------------------------------------------
$r = run_bridge(request => cli_request(username => ['mallory'], _xcat_authname => ['root']),
    script => [ { send => { type => 'done', errorcode => 0 } } ]);
is($r->{request}{user}, 'root', 'the authenticated name wins over username');

# --- no command ----------------------------------------------------------------------------------
$r = run_bridge(request => { arg => ['img'] });
is_deeply($r->{responses}, [ { error => ['xcat-imaged: the request has no command'], errorcode => [1] } ], 'a request without command');
ok(!defined $r->{request_line}, 'no engine was started for it');

# --- UTF-8 both ways ---------------------------------------------------------------------------
my $cafe = "caf\x{e9} \x{2713}";
my $bytes = $cafe;
utf8::encode($bytes);
$r = run_bridge(
    request => cli_request(arg => [ "/tmp/$bytes" ]),
    script  => [ { send => { type => 'info', text => $cafe } }, { send => { type => 'done', errorcode => 0 } } ]
);
is_deeply($r->{responses}, [ { info => [$bytes] } ], 'engine text reaches the callback as UTF-8 bytes');
is($r->{request}{args}[0], "/tmp/$cafe", 'UTF-8 byte args travel as characters');

# --- done with an errorcode but no error ---------------------------------------------------
$r = run_bridge(script => [ { send => { type => 'info', text => 'x' } }, { send => { type => 'done', errorcode => 4 } } ]);
is_deeply(
    $r->{responses},
    [ { info => ['x'] }, { error => ['xcat-imaged finished with errorcode 4 without reporting an error'], errorcode => [4] } ],
    'a failing done without an error still reaches the client as an error'
);

# --- after done: stdin closed, later lines ignored ------------------------------------------
$r = run_bridge(
    script => [
        { ignore => ['PIPE'] },
        { send => { type => 'done', errorcode => 0 } },
        { raw  => qq{{"type":"info","text":"after done"}\n} },
        { read_eof => 5 },
    ]
);
is_deeply($r->{responses}, [], 'lines after done are not relayed');
ok((grep { $_ eq '#eof' } @{ $r->{events} }), 'the bridge closes the engine stdin after done');
clean_ok($r, 'after done');

# --- a last line without newline still counts ------------------------------------------------
$r = run_bridge(script => [ { send => { type => 'info', text => 'a' } }, { raw => '{"type":"done","errorcode":0}' } ]);
is_deeply($r->{responses}, [ { info => ['a'] } ], 'done without a trailing newline at EOF is a done');

# --- lots of output, in order -----------------------------------------------------------------
$r = run_bridge(script => [ { spam => 20000 }, { send => { type => 'done', errorcode => 0 } } ]);
is(scalar @{ $r->{responses} }, 20000, '20000 lines relayed');
is_deeply([ map { $_->{info}[0] } @{ $r->{responses} } ], [ map { "line $_" } 1 .. 20000 ], '... in order');
clean_ok($r, 'spam');

# --- the callback receives one payload per line, in order, even split across reads ----------
$r = run_bridge(
    script => [
        { raw   => '{"type":"info",' },
        { sleep => 0.2 },
        { raw   => qq["text":"split"}\n{"type":"data","text":"two"}\n{"type":"done",] },
        { sleep => 0.2 },
        { raw   => qq["errorcode":0}\n] },
    ]
);
is_deeply($r->{responses}, [ { info => ['split'] }, { data => ['two'] } ], 'lines split across reads are reassembled');
clean_ok($r, 'split');

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
