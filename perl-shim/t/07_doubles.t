#!/usr/bin/perl
# The xCAT doubles in t/lib keep the real APIs' call shapes and return conventions.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Spec;
use Test::More;
use ImagedTest qw(scratch read_json write_json);
use xCAT::Table;
use xCAT::TableUtils;
use xCAT::PasswordUtils;

my $file = File::Spec->catfile(scratch(), 'doubles.json');
local $ENV{XCAT_TEST_TABLES} = $file;
write_json($file, {
    site    => [ { key => 'installdir', value => '/install' }, { key => 'off', value => 'x', disable => 'yes' }, { key => 'on', value => 'y', disable => 'No' } ],
    osimage => [
        { imagename => 'a', osvers => 'rhels8', osarch => 'x86_64' },
        { imagename => 'b', osvers => 'rhels9', osarch => 'x86_64' },
        { imagename => 'c', osvers => 'sles15', osarch => 'ppc64le', profile => '' },
        { imagename => 'd', osvers => 'Rhel_x' },
    ],
});

# new
ok(!defined xCAT::Table->new('nosuchtable'), 'new: a table not in the schema is undef');
ok(!defined xCAT::Table->new('linuximage', -create => 0), 'new: absent with -create=>0 is undef');
ok(!exists read_json($file)->{linuximage}, '... and not created');
isa_ok(xCAT::Table->new('linuximage'), 'xCAT::Table', 'new: -create defaults to 1');
is_deeply(read_json($file)->{linuximage}, [], '... and creates the table');
my $os = xCAT::Table->new('osimage', -create => 0);
isa_ok($os, 'xCAT::Table', 'new: an existing table with -create=>0');

# getAttribs
my @all = $os->getAttribs({ osarch => 'x86_64' }, 'imagename');
is_deeply(\@all, [ { imagename => 'a' }, { imagename => 'b' } ], 'getAttribs in list context: every row');
my $first = $os->getAttribs({ osarch => 'x86_64' }, 'imagename');
is_deeply($first, { imagename => 'a' }, 'getAttribs in scalar context: the first');
is_deeply(scalar $os->getAttribs({ imagename => 'a' }, [ 'osvers', 'profile' ]), { osvers => 'rhels8' }, 'getAttribs with an arrayref of columns');
my @none = $os->getAttribs({ imagename => 'zz' }, 'osvers');
is_deeply(\@none, [undef], 'getAttribs with no match: (undef) in list context, as "(my $ref) = ..." expects');
ok(!defined scalar $os->getAttribs({ imagename => 'c' }, 'profile'), 'getAttribs: an empty column is not returned; no row left is undef');
is_deeply([ $os->getAttribs({ imagename => 'd', osarch => '' }, 'osvers') ], [ { osvers => 'Rhel_x' } ], 'getAttribs: a false key value matches NULL');
ok(!defined scalar $os->getAttribs({ nosuchcol => 'x' }, 'osvers'), 'getAttribs: an unknown key column is undef');
my $site = xCAT::Table->new('site');
ok(!defined scalar $site->getAttribs({ key => 'off' }, 'value'), 'getAttribs: disable=yes hides a row');
is_deeply(scalar $site->getAttribs({ key => 'on' }, 'value'), { value => 'y' }, 'getAttribs: disable=No does not');

# getAllAttribsWhere
my $names = sub { [ map { $_->{imagename} } $os->getAllAttribsWhere(@_) ] };
is_deeply($names->([ 'osvers=~rhel%' ], 'imagename'), [qw(a b d)], 'LIKE: % and ASCII case-insensitive');
is_deeply($names->([ 'osvers=~rhel\_x' ], 'imagename'), [], 'LIKE has no escape: \\ is a literal');
is_deeply($names->([ 'osvers=~rhel_x' ], 'imagename'), [qw(d)], 'LIKE: _ is one character');
is_deeply($names->([ 'osvers!~rhel%' ], 'imagename'), [qw(c)], 'NOT LIKE');
is_deeply($names->([ 'osarch!=x86_64' ], 'imagename'), [qw(c)], '!= never matches NULL');
is_deeply($names->([ 'osvers>rhels8', 'osvers<sles15' ], 'imagename'), [qw(b)], '< and > compare text, ANDed');
is_deeply($names->([ 'osvers>=sles15' ], 'imagename'), [qw(c)], '>=');
is_deeply($names->([ 'osvers<=Rhel_x' ], 'imagename'), [qw(d)], '<=');
my ($c) = $os->getAllAttribsWhere([ 'imagename==c' ], 'ALL');
ok(exists $c->{profile} && !defined $c->{profile} && exists $c->{synclists}, "'ALL': every column, empty ones undef");
ok(!eval { $os->getAllAttribsWhere([], 'imagename'); 1 }, 'an empty where dies, as the real SQL fails');
ok(!eval { $os->getAllAttribsWhere([ 'nosuchcol==1' ], 'imagename'); 1 }, 'an unknown column dies');
ok(!eval { $os->getAllAttribsWhere([ q{osvers==it's} ], 'imagename'); 1 }, "a ' in a value dies");

# setAttribs
is($os->setAttribs({ imagename => 'a' }, { profile => 'compute', osvers => 'NULL' }), 0, 'setAttribs update returns 0');
is_deeply(scalar $os->getAttribs({ imagename => 'a' }, 'profile', 'osvers'), { profile => 'compute' }, '... and NULL cleared a column');
is($os->setAttribs({ imagename => 'e' }, { osvers => 'x' }), 0, 'setAttribs insert returns 0');
my @r = $os->setAttribs({ imagename => 'a' }, { nosuchcol => 'x' });
is_deeply(\@r, [ undef, 'Error attempting requested DB operation' ], 'setAttribs failure: (undef, $err)');
@r = $os->setAttribs({}, { profile => '' });
is_deeply(\@r, [], 'setAttribs: a blank row is not inserted, returns empty');
ok(!eval { $os->setAttribs({ imagename => 'f' }, { nosuchcol => 'x' }); 1 }, 'setAttribs: an insert with an unknown column dies');

# delEntries
$os->delEntries({ imagename => 'e' });
ok(!defined scalar $os->getAttribs({ imagename => 'e' }, 'osvers'), 'delEntries with a hashref');
$os->delEntries([ { imagename => 'b' }, { imagename => 'c' } ]);
is_deeply([ map { $_->{imagename} } @{ read_json($file)->{osimage} } ], [qw(a d)], 'delEntries with an arrayref ORs');
ok(!eval { $os->delEntries({}); 1 }, 'delEntries({}) dies, as the real SQL fails');
$os->close;

# TableUtils
is(xCAT::TableUtils->get_site_attribute('installdir'), '/install', 'get_site_attribute');
is(xCAT::TableUtils->get_site_attribute('nokey', 'dflt'), 'dflt', 'get_site_attribute with a default');
{
    local %::XCATSITEVALS = (installdir => '/from/xcatd');
    is(xCAT::TableUtils->get_site_attribute('installdir'), '/from/xcatd', 'get_site_attribute prefers %::XCATSITEVALS');
}

# PasswordUtils
my $pw = xCAT::Table->new('passwd');
$pw->setAttribs({ key => 'system', username => 'root' }, { password => 'secret', cryptmethod => 'md5' });
my $h = xCAT::PasswordUtils::crypt_system_password();
like($h, qr/\A\$1\$[A-Za-z0-9]{8}\$/, 'crypt_system_password: md5 with an 8-character salt');
is(crypt('secret', $h), $h, '... of the table password');
ok(!defined xCAT::PasswordUtils->crypt_system_password(), 'called as a method it gets the class as table name: undef, as the real one');

done_testing();
