package xCAT_plugin::imaged;    ## no critic (Modules::RequireFilenameMatchesPackage) -- installed as $XCATROOT/lib/perl/xCAT_plugin/imaged.pm

# xcatd plugin: hands genimage, packimage, imgexport and rmimage to the xcat-imaged engine when
# site.imagehandler is "imaged"; without that key the stock plugins keep the commands.

use strict;
use warnings;

BEGIN { $::XCATROOT = $ENV{XCATROOT} ? $ENV{XCATROOT} : '/opt/xcat'; }
use lib "$::XCATROOT/lib/perl";
use xCAT::Imaged;

our $VERSION = '0.1.0';

sub handled_commands {
    return {
        genimage  => 'site:imagehandler',
        packimage => 'site:imagehandler',
        imgexport => 'site:imagehandler',
        rmimage   => 'site:imagehandler',
    };
}

sub process_request {
    my ($request, $callback, $doreq) = @_;    # $doreq unused: the engine runs no xCAT commands
    xCAT::Imaged::relay($request, $callback);
    return;
}

1;
