#!/usr/bin/perl
# perlcritic at severity 4 over the plugin, the bridge and the test support code. Runs when
# Perl::Critic is installed; with AUTHOR_TESTING set, a missing Perl::Critic is a failure.
use strict;
use warnings;
use FindBin;
use File::Find;
use File::Spec;
use Test::More;

my $have = eval { require Perl::Critic; 1 };
unless ($have) {
    plan skip_all => 'Perl::Critic is not installed (apt-get install libperl-critic-perl)' unless $ENV{AUTHOR_TESTING};
    fail('AUTHOR_TESTING is set but Perl::Critic is not installed');
    done_testing();
    exit;
}

my $shim = File::Spec->catdir($FindBin::Bin, File::Spec->updir);
my $repo = File::Spec->catdir($shim, File::Spec->updir);
my @dirs = map { File::Spec->catdir(@{$_}) } [ $repo, 'plugin' ], [ $shim, 'lib' ], [ $shim, 't', 'lib' ], [ $shim, 't', 'bin' ];
my @files;
find({ no_chdir => 1, wanted => sub { push @files, $_ if -f && /\.p[lm]\z/ } }, grep { -d } @dirs);
ok(@files >= 4, 'found the Perl files') or diag "@dirs";

my $critic = Perl::Critic->new(-severity => 4, -verbose => "%f:%l:%c: %m (%p, severity %s)\n");
for my $file (sort @files) {
    my @v = $critic->critique($file);
    ok(!@v, "perlcritic -4 $file") or diag join q{}, map {"$_"} @v;
}
done_testing();
