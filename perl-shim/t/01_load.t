#!/usr/bin/perl
# The plugin and the bridge compile and load; the plugin registers the four commands on
# site:imagehandler, defines no preprocess_request, and hands process_request to the bridge.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Spec;
use File::Temp qw(tempdir);
use Test::More;

my $XCATROOT;
BEGIN {
    # Point the plugin's "use lib $XCATROOT/lib/perl" at an empty place, so an installed xCAT
    # cannot shadow the modules under test.
    $XCATROOT = tempdir('imaged-root-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    $ENV{XCATROOT} = $XCATROOT;    ## no critic (RequireLocalizedPunctuationVars) -- for the whole test file
    delete $ENV{XCAT_IMAGED_ENGINE};
}
use ImagedTest qw(next_fd no_zombie plugin_path scratch);

my $fd0 = next_fd();

ok(require xCAT::Imaged, 'the bridge loads');
ok(xCAT::Imaged->can('relay'), 'the bridge has relay');
ok(eval { require(plugin_path()); 1 }, 'the plugin loads by its repository path') or diag $@;
is($::XCATROOT, $XCATROOT, 'the plugin takes $::XCATROOT from the environment');

is_deeply(
    xCAT_plugin::imaged::handled_commands(),
    {
        genimage  => 'site:imagehandler',
        packimage => 'site:imagehandler',
        imgexport => 'site:imagehandler',
        rmimage   => 'site:imagehandler',
    },
    'handled_commands: the four image commands, switched by site.imagehandler'
);
ok(!xCAT_plugin::imaged->can('preprocess_request'), 'no preprocess_request: images are handled where the command arrived');
ok(xCAT_plugin::imaged->can('process_request'), 'process_request exists');

# Through the plugin: the default engine path is $XCATROOT/sbin/xcat-imaged, here missing.
my @rsp;
my $rv = xCAT_plugin::imaged::process_request({ command => ['rmimage'], arg => ['img'] }, sub { push @rsp, $_[0] }, sub { die "no doreq\n" });
is_deeply(
    \@rsp,
    [ { error => ["xcat-imaged engine not found or not executable: $XCATROOT/sbin/xcat-imaged"], errorcode => [1] } ],
    'process_request relays; a missing engine is one error with errorcode 1'
);

{
    local $ENV{XCAT_IMAGED_ENGINE} = File::Spec->catfile(scratch(), 'no-such-engine');
    @rsp = ();
    xCAT::Imaged::relay({ command => ['rmimage'], arg => [] }, sub { push @rsp, $_[0] });
    is_deeply(\@rsp, [ { error => ["xcat-imaged engine not found or not executable: $ENV{XCAT_IMAGED_ENGINE}"], errorcode => [1] } ],
        'XCAT_IMAGED_ENGINE names the engine');

    my $plain = File::Spec->catfile(scratch(), 'not-executable');
    open my $fh, '>', $plain or die "$plain: $!";
    print {$fh} "#!/bin/sh\nexit 0\n" or die;
    close $fh or die;
    chmod 0644, $plain or die;
    local $ENV{XCAT_IMAGED_ENGINE} = $plain;
    @rsp = ();
    xCAT::Imaged::relay({ command => ['rmimage'] }, sub { push @rsp, $_[0] });
    is_deeply(\@rsp, [ { error => ["xcat-imaged engine not found or not executable: $plain"], errorcode => [1] } ],
        'a file without the execute bit is refused');

    local $ENV{XCAT_IMAGED_ENGINE} = scratch();
    @rsp = ();
    xCAT::Imaged::relay({ command => ['rmimage'] }, sub { push @rsp, $_[0] });
    is_deeply(\@rsp, [ { error => ['xcat-imaged engine not found or not executable: ' . scratch()], errorcode => [1] } ],
        'a directory is not an engine');
}

is(next_fd(), $fd0, 'no descriptor leaked');
ok(no_zombie(), 'no child left');
done_testing();
