package xCAT::TableUtils;

# Test double of xCAT::TableUtils (perl-xCAT/xCAT/TableUtils.pm): get_site_attribute only.
# Like the real one, it is called as a class method, reads %::XCATSITEVALS when xcatd has filled
# it and the site table otherwise, and returns the value, else the optional default.

use strict;
use warnings;
use xCAT::Table;

our $VERSION = '0.1.0';

sub get_site_attribute {
    my ($class, $attr, $dvalue) = @_;
    my $values;
    if (%::XCATSITEVALS) {
        $values = $::XCATSITEVALS{$attr};
    } else {
        my $sitetab = xCAT::Table->new('site');
        if ($sitetab) {
            (my $ref) = $sitetab->getAttribs({ key => $attr }, 'value');
            $values = $ref->{value} if $ref;
            $sitetab->close;
        } else {
            print {*STDERR} "Error:  Could not read the site table\n";    # MsgUtils "E" without a callback
        }
    }
    return $values if defined $values;
    return $dvalue;
}

1;
