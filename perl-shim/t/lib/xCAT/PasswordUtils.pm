package xCAT::PasswordUtils;

# Test double of xCAT::PasswordUtils (xCAT-server/lib/perl/xCAT/PasswordUtils.pm):
# crypt_system_password only, with the real logic. It is a plain function whose optional
# arguments are (table, key pairs, fields); called as a method, the class name would be taken
# as the table name and the answer would be undef, as with the real one.
#
# Without arguments it reads passwd key=system username=root (password, cryptmethod):
# no table, no row or no password -> undef; a password already starting with $1$, $5$ or $6$ is
# returned as is; otherwise it is crypted with the cryptmethod's prefix (md5 $1$, sha256 $5$,
# sha512 $6$; none means sha256) and an 8-character random salt; an unknown method -> undef.

use strict;
use warnings;
use xCAT::Table;

our $VERSION = '0.1.0';

my %CRYPT_METHOD = (md5 => '$1$', sha256 => '$5$', sha512 => '$6$');
my @SALT_CHARS   = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');

## no critic (Subroutines::ProhibitExplicitReturnUndef) -- the real function returns undef explicitly
sub crypt_system_password {
    my ($table, $kp, $fields) = @_;
    $table = 'passwd' unless defined $table;
    unless (defined $kp) {
        $kp     = { key => 'system', username => 'root' };
        $fields = [ 'password', 'cryptmethod' ];
    }
    my $tabh = xCAT::Table->new($table);
    return undef unless $tabh;
    my $data = $tabh->getAttribs($kp, @{$fields});
    return undef unless defined $data;
    $tabh->close();
    my $password = $data->{password};
    return undef unless defined $password;
    return $password if $password =~ /\A\$[156]\$/;
    my $method = $data->{cryptmethod};
    my $prefix = $method ? $CRYPT_METHOD{$method} : $CRYPT_METHOD{sha256};
    return undef unless defined $prefix;    # "Unsupported crypt method"
    return crypt $password, $prefix . _salt(8);
}

sub _salt {
    my ($n) = @_;
    return join q{}, map { $SALT_CHARS[ int rand @SALT_CHARS ] } 1 .. $n;
}

1;
