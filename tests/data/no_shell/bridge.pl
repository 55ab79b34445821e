#!/usr/bin/perl
# Drives the real bridge (xCAT::Imaged::relay) once, for tests/no_shell.rs: tables from the test
# double (XCAT_TEST_TABLES), the engine from XCAT_IMAGED_ENGINE. Arguments: the command, then
# its arguments. Prints every callback response as one JSON line.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../../perl-shim/lib", "$FindBin::Bin/../../../perl-shim/t/lib";
use JSON::PP ();
use xCAT::Imaged;

our $VERSION = '0.1.0';

my ($command, @args) = @ARGV;
my $json = JSON::PP->new->canonical;
my @out;
xCAT::Imaged::relay({ command => [$command], arg => \@args, clienttype => ['cli'], cwd => ['/'] },
    sub { push @out, $_[0]; return; });
print {*STDOUT} map { $json->encode($_) . "\n" } @out or die "write: $!\n";
