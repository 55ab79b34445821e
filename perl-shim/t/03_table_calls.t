#!/usr/bin/perl
# Engine calls are answered with xCAT's table APIs (here the doubles in t/lib), one reply per
# call, in order; failures come back as ok:false with a reason.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use ImagedTest qw(run_bridge clean_ok next_fd no_zombie);

my $fd0 = next_fd();

my %TABLES = (
    site => [
        { key => 'installdir', value => '/tmp/x' },
        { key => 'tftpdir',    value => '/tftp', disable => '1' },
        { key => 'xcatdport',  value => 3001 },
    ],
    osimage => [
        { imagename => 'img',  osvers => 'rhels8.6', osarch => 'x86_64',  profile => 'compute', provmethod => 'netboot' },
        { imagename => 'img2', osvers => 'sles15',   osarch => 'ppc64le', profile => 'service', provmethod => 'statelite' },
        { imagename => 'img3', osvers => 'rhels9',   osarch => 'x86_64',  provmethod => 'install', disable => '1' },
    ],
    linuximage => [ { imagename => 'img', rootimgdir => '/install/netboot/img', exlist => '', pkglist => '/a.pkglist' } ],
    passwd     => [ { key => 'system', username => 'root', password => 'cluster' } ],
);

sub call { my ($method, $params) = @_; return { call => { method => $method, (defined $params ? (params => $params) : ()) } }; }

my @cases = (
    [ call('table.get', { table => 'osimage', keys => { imagename => 'img' }, attrs => [qw(osvers osarch synclists nosuchcol)] }),
        { ok => 1, result => { osvers => 'rhels8.6', osarch => 'x86_64' } }, 'table.get: the asked columns that are set' ],
    [ call('table.get', { table => 'osimage', keys => { imagename => 'nope' }, attrs => ['osvers'] }),
        { ok => 1, result => undef }, 'table.get: no row is null' ],
    [ call('table.get', { table => 'osimage', keys => { imagename => 'img3' }, attrs => ['osvers'] }),
        { ok => 1, result => undef }, 'table.get: a disabled row is not seen' ],
    [ call('table.get', { table => 'linuximage', keys => { imagename => 'img' }, attrs => ['exlist'] }),
        { ok => 1, result => undef }, 'table.get: a row with only empty asked columns is null' ],
    [ call('table.get', { table => 'nosuchtable', keys => { a => 'b' }, attrs => ['c'] }),
        { ok => 0, error => 'Can not open nosuchtable table.' }, 'table.get: a table that cannot be opened' ],
    [ call('table.list', { table => 'osimage', where => ['osarch==x86_64'], attrs => [ 'imagename', 'osvers' ] }),
        { ok => 1, result => [ { imagename => 'img', osvers => 'rhels8.6' } ] }, 'table.list: == (disabled rows skipped)' ],
    [ call('table.list', { table => 'osimage', where => ['provmethod!=netboot'], attrs => ['imagename'] }),
        { ok => 1, result => [ { imagename => 'img2' } ] }, 'table.list: !=' ],
    [ call('table.list', { table => 'osimage', where => ['osvers=~RHELS%'], attrs => ['imagename'] }),
        { ok => 1, result => [ { imagename => 'img' } ] }, 'table.list: =~ is SQL LIKE, case-insensitive' ],
    [ call('table.list', { table => 'osimage', where => [ 'osvers!~/%rhels%/', 'osarch==ppc64le' ], attrs => ['imagename'] }),
        { ok => 1, result => [ { imagename => 'img2' } ] }, 'table.list: !~ with slashes, conditions ANDed' ],
    [ call('table.list', { table => 'osimage', where => ['osarch==s390x'], attrs => ['imagename'] }),
        { ok => 1, result => [] }, 'table.list: nothing matches is an empty array' ],
    [ call('table.list', { table => 'osimage', where => [], attrs => ['imagename'] }),
        { ok => 0, error => 'table.list needs at least one condition in where' }, 'table.list: an empty where is refused' ],
    [ call('table.list', { table => 'osimage', where => ['osvers~~x'], attrs => ['imagename'] }),
        { ok => 0, error_like => qr/unsupported operator: osvers~~x/ }, 'table.list: a die in the table code becomes ok:false' ],
    [ call('table.set', { table => 'linuximage', keys => { imagename => 'img' }, values => { rootimgdir => '/new', pkglist => 'NULL' } }),
        { ok => 1, result => undef }, 'table.set: update' ],
    [ call('table.set', { table => 'osimage', keys => { imagename => 'new' }, values => { osvers => 'rhels9.2', provmethod => 'netboot' } }),
        { ok => 1, result => undef }, 'table.set: insert' ],
    [ call('table.set', { table => 'osimage', keys => { imagename => 'img' }, values => { nosuchcol => 'x' } }),
        { ok => 0, error => 'Error attempting requested DB operation' }, 'table.set: its (undef, $err) becomes ok:false' ],
    [ call('table.set', { table => 'osimage', keys => { imagename => 'zzz' }, values => { nosuchcol => 'x' } }),
        { ok => 0, error_like => qr/has no column named nosuchcol/ }, 'table.set: a failed insert' ],
    [ call('table.set', { table => 'nosuchtable', keys => { a => 'b' }, values => { c => 'd' } }),
        { ok => 0, error => 'Can not open nosuchtable table.' }, 'table.set: a table that cannot be opened' ],
    [ call('table.delete', { table => 'osimage', keys => { imagename => 'img2' } }),
        { ok => 1, result => undef }, 'table.delete' ],
    [ call('table.delete', { table => 'osimage', keys => {} }),
        { ok => 0, error => 'table.delete needs at least one key' }, 'table.delete: empty keys are refused' ],
    [ call('table.delete', { table => 'nosuchtable', keys => { a => 'b' } }),
        { ok => 0, error => 'Can not open nosuchtable table.' }, 'table.delete: a table that cannot be opened' ],
    [ call('site.get', { key => 'installdir' }), { ok => 1, result => '/tmp/x' }, 'site.get' ],
    [ call('site.get', { key => 'xcatdport' }),  { ok => 1, result => '3001' }, 'site.get: numbers come back as strings' ],
    [ call('site.get', { key => 'nokey' }),      { ok => 1, result => undef }, 'site.get: unset is null' ],
    [ call('site.get', { key => 'tftpdir' }),    { ok => 1, result => undef }, 'site.get: a disabled row is unset' ],
    [ call('xcat.system_password'), { ok => 1, result_like => qr/\A\$5\$[A-Za-z0-9]{8}\$/ }, 'xcat.system_password: sha256 crypt' ],
    [ call('xcat.system_password', {}), { ok => 1, result_like => qr/\A\$5\$/ }, 'xcat.system_password with empty params' ],
    [ call('foo.bar', {}), { ok => 0, error => 'unknown method foo.bar' }, 'unknown method' ],
    [ call('table.get', { table => 'osimage', keys => 'img', attrs => ['osvers'] }),
        { ok => 0, error => 'bad params for table.get: "keys" must be an object of strings' }, 'bad params: keys not an object' ],
    [ call('table.get', { keys => {}, attrs => [] }),
        { ok => 0, error => 'bad params for table.get: "table" must be a non-empty string' }, 'bad params: no table' ],
    [ call('table.list', { table => 'osimage', where => [ { a => 1 } ], attrs => [] }),
        { ok => 0, error => 'bad params for table.list: "where" must be an array of strings' }, 'bad params: where' ],
    [ call('table.get', [ 'osimage' ]), { ok => 0, error => 'bad params for table.get: not an object' }, 'params not an object' ],
    [ call('site.get', { key => "" }), { ok => 0, error => 'bad params for site.get: "key" must be a non-empty string' }, 'bad params: empty key' ],
);

my $r = run_bridge(tables => \%TABLES, script => [ (map { $_->[0] } @cases), { send => { type => 'done', errorcode => 0 } } ]);
is_deeply($r->{responses}, [], 'calls produce no callback messages');
is(scalar @{ $r->{replies} }, scalar @cases, 'one reply per call');
for my $i (0 .. $#cases) {
    my ($step, $want, $name) = @{ $cases[$i] };
    my $got = $r->{replies}[$i] // {};
    subtest $name => sub {
        is($got->{type}, 'reply', 'a reply');
        is($got->{id}, $i + 1, 'with the id of its call');
        is(!!$got->{ok}, !!$want->{ok}, $want->{ok} ? 'ok' : 'not ok');
        if    (exists $want->{result})      { is_deeply($got->{result}, $want->{result}, 'result') or diag explain $got; }
        elsif ($want->{result_like})        { like($got->{result}, $want->{result_like}, 'result'); }
        elsif (exists $want->{error})       { is($got->{error}, $want->{error}, 'error'); }
        elsif ($want->{error_like})         { like($got->{error}, $want->{error_like}, 'error'); }
        ok(!exists $got->{result}, 'no result beside an error') unless $want->{ok};
        ok(!exists $got->{error}, 'no error beside a result') if $want->{ok};
    };
}
my ($crypted) = map { $_->{result} } grep { $_->{id} == 25 } @{ $r->{replies} };
is(crypt('cluster', $crypted), $crypted, 'the crypted password is the passwd table password');

# The tables after the engine's writes.
my %os = map { $_->{imagename} => $_ } @{ $r->{tables}{osimage} };
is_deeply([ sort keys %os ], [qw(img img3 new)], 'img2 was deleted, new was inserted');
is_deeply($os{new}, { imagename => 'new', osvers => 'rhels9.2', provmethod => 'netboot' }, 'the inserted row');
is_deeply($r->{tables}{linuximage}, [ { imagename => 'img', rootimgdir => '/new', exlist => '' } ], 'the updated row; NULL cleared pkglist');
ok(!exists $r->{tables}{nosuchtable}, 'an unknown table is not created');
clean_ok($r, 'table calls');

# Exact bytes of replies.
$r = run_bridge(tables => \%TABLES, script => [
    call('table.get', { table => 'osimage', keys => { imagename => 'img' }, attrs => [ 'osvers', 'osarch' ] }),
    call('nope'),
]);
is($r->{received}[1], '{"type":"reply","id":1,"ok":true,"result":{"osarch":"x86_64","osvers":"rhels8.6"}}', 'reply bytes (ok)');
is($r->{received}[2], '{"type":"reply","id":2,"ok":false,"error":"unknown method nope"}', 'reply bytes (not ok)');

# Several calls sent at once are answered in order.
$r = run_bridge(tables => \%TABLES, script => [
    { calls => [ map { { method => 'site.get', params => { key => $_ } } } qw(installdir nokey xcatdport) ] },
    { send => { type => 'done', errorcode => 0 } },
]);
is_deeply([ map { [ $_->{id}, $_->{result} ] } @{ $r->{replies} } ], [ [ 1, '/tmp/x' ], [ 2, undef ], [ 3, '3001' ] ],
    'pipelined calls are answered in order');
clean_ok($r, 'pipelined');

# system_password: already crypted passes through; no row is null; unknown cryptmethod is null.
for my $case (
    [ [ { key => 'system', username => 'root', password => '$6$abc$def' } ], '$6$abc$def', 'an already crypted password as is' ],
    [ [], undef, 'no passwd row: null' ],
    [ [ { key => 'system', username => 'root', password => 'pw', cryptmethod => 'rot13' } ], undef, 'unknown cryptmethod: null' ],
    [ [ { key => 'system', username => 'root', password => 'pw', cryptmethod => 'sha512' } ], qr/\A\$6\$/, 'cryptmethod sha512' ],
    [ [ { key => 'system', username => 'admin', password => 'pw' } ], undef, 'only root counts' ],
  )
{
    my ($rows, $want, $name) = @{$case};
    $r = run_bridge(tables => { passwd => $rows }, script => [ call('xcat.system_password') ]);
    ref $want ? like($r->{replies}[0]{result}, $want, "xcat.system_password: $name")
              : is($r->{replies}[0]{result}, $want, "xcat.system_password: $name");
}

# UTF-8 values both ways.
my $e = "\x{e9}t\x{e9}";
$r = run_bridge(tables => { site => [ { key => 'motd', value => $e } ] }, script => [
    call('site.get', { key => 'motd' }),
    call('table.set', { table => 'site', keys => { key => "cl\x{e9}" }, values => { value => "\x{2713}" } }),
]);
is($r->{replies}[0]{result}, $e, 'UTF-8 table values travel as characters');
is_deeply([ grep { $_->{key} eq "cl\x{e9}" } @{ $r->{tables}{site} } ], [ { key => "cl\x{e9}", value => "\x{2713}" } ],
    'characters from the engine are stored as UTF-8');

is(next_fd(), $fd0, 'no descriptor leaked over the file');
ok(no_zombie(), 'no child left over the file');
done_testing();
