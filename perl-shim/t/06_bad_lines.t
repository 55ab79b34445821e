#!/usr/bin/perl
# A line that is not a protocol message is reported once as a protocol error; the engine is
# then stopped (stdin closed, TERM, KILL after the grace) and nothing else it says is relayed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie);

my $fd0 = next_fd();
my $P   = 'xcat-imaged protocol error: ';

my @cases = (
    [ "hello\n",                                   qr/\A${P}line is not valid JSON \(.+\): "hello"\z/,  'not JSON' ],
    [ "\n",                                        qr/\A${P}line is not valid JSON \(.+\): ""\z/,       'an empty line' ],
    [ qq[{"type":"info","text":"x"\n],             qr/\A${P}line is not valid JSON/,                     'truncated JSON' ],
    [ "[1,2]\n",                                   qr/\A${P}message is not a JSON object: "\[1,2\]"\z/, 'an array' ],
    [ "null\n",                                    qr/\A${P}message is not a JSON object: "null"\z/,    'null' ],
    [ qq{{"text":"x"}\n},                          qr/\A${P}message has no type: /,                     'no type' ],
    [ qq{{"type":"bogus","text":"x"}\n},           qr/\A${P}unknown message type "bogus"\z/,            'unknown type' ],
    [ qq{{"type":"reply","id":1,"ok":true}\n},     qr/\A${P}unknown message type "reply"\z/,            'a reply from the engine' ],
    [ qq{{"type":"info"}\n},                       qr/\A${P}"info" message has no text\z/,              'info without text' ],
    [ qq{{"type":"warning","text":["x"]}\n},       qr/\A${P}"warning" message has no text\z/,           'text not a string' ],
    [ qq{{"type":"error","text":"x"}\n},           qr/\A${P}"error" message has no integer errorcode\z/, 'error without errorcode' ],
    [ qq{{"type":"error","text":"x","errorcode":1.5}\n}, qr/\A${P}"error" message has no integer errorcode\z/, 'fractional errorcode' ],
    [ qq{{"type":"done"}\n},                       qr/\A${P}"done" message has no integer errorcode\z/, 'done without errorcode' ],
    [ qq{{"type":"done","errorcode":"zero"}\n},    qr/\A${P}"done" message has no integer errorcode\z/, 'done with a word' ],
    [ qq{{"type":"call","method":"site.get"}\n},   qr/\A${P}call has no integer id\z/,                  'call without id' ],
    [ qq{{"type":"call","id":-1,"method":"site.get"}\n}, qr/\A${P}call has no integer id\z/,            'negative id' ],
    [ qq{{"type":"call","id":1}\n},                qr/\A${P}call has no method\z/,                      'call without method' ],
    [ qq{{"type":"info","text":"\xff\xfe"}\n},     qr/\A${P}line is not valid JSON \(.*\): "\{.*\\xff\\xfe.*"\z/, 'invalid UTF-8' ],
);

for my $case (@cases) {
    my ($line, $want, $name) = @{$case};
    my $r = run_bridge(
        grace  => 2,
        script => [
            { ignore => ['PIPE'] },
            { trap => ['TERM'] },
            { send => { type => 'info', text => 'before' } },
            { raw  => $line },
            { send => { type => 'info', text => 'after' } },
            { send => { type => 'done', errorcode => 0 } },
            { wait_signal => 10 },
        ]
    );
    subtest $name => sub {
        is(scalar @{ $r->{responses} }, 2, 'the line before, then one error') or diag explain $r->{responses};
        is_deeply($r->{responses}[0], { info => ['before'] }, 'the good line before it is relayed');
        like($r->{responses}[1]{error}[0] // q{}, $want, 'the protocol error');
        is_deeply($r->{responses}[1]{errorcode}, [1], 'errorcode 1');
        ok((grep { $_ eq '#signal TERM' } @{ $r->{events} }), 'the engine got SIGTERM');
        cmp_ok($r->{elapsed}, '<', 2, 'it exited on TERM, no KILL needed');
        clean_ok($r, $name);
    };
}

# An overlong line (more than 4 MiB without a newline).
my $r = run_bridge(script => [ { raw_repeat => [ '{"type":"info","text":"', 'x', 4 * 1024 * 1024 + 10 ] }, { sleep => 30 } ]);
is_deeply($r->{responses}, [ { error => ["${P}line longer than 4194304 bytes"], errorcode => [1] } ], 'an overlong line');
cmp_ok($r->{elapsed}, '<', 5, 'the engine was stopped by TERM');
clean_ok($r, 'overlong');

# An engine that ignores TERM after a bad line is killed after the grace, with no more messages.
$r = run_bridge(grace => 1, script => [ { ignore => [ 'TERM', 'PIPE' ] }, { raw => "junk\n" }, { spam => 100 }, { sleep => 30 } ]);
is(scalar @{ $r->{responses} }, 1, 'only the protocol error, even though the engine goes on talking');
like($r->{responses}[0]{error}[0], qr/\A${P}line is not valid JSON/, '... and it is that one');
cmp_ok($r->{elapsed}, '<', 6, 'killed after the grace');
clean_ok($r, 'ignores TERM after a bad line');

# A bad line while calls are pending: no reply is sent after it.
$r = run_bridge(script => [ { trap => ['TERM'] }, { raw => qq{{"type":"call","id":1,"method":"site.get","params":{"key":"x"}}\nbad\n} }, { read_eof => 5 } ]);
is(scalar @{ $r->{responses} }, 1, 'one protocol error');
ok((grep { $_ eq '#eof' } @{ $r->{events} }), 'the engine sees its stdin closed') or diag explain $r->{events};
ok(!(grep { /"type":"reply"/ } @{ $r->{received} }), 'the call before the bad line got no reply');

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
