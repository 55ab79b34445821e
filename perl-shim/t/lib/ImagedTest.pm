package ImagedTest;

# Helpers shared by perl-shim/t/*.t: run the bridge against t/bin/fake-engine.pl with a script,
# a request and tables, and collect what came back; check for leaked descriptors and zombies.

use strict;
use warnings;
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes ();

use xCAT::Imaged;

our $VERSION   = '0.1.0';
our @EXPORT_OK = qw(next_fd no_zombie run_bridge clean_ok engine_wrapper scratch read_json write_json
  cli_request rest_request plugin_path);

my $T_DIR   = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), File::Spec->updir));
my $FAKE    = File::Spec->catfile($T_DIR, 'bin', 'fake-engine.pl');
my $PLUGIN  = File::Spec->catfile($T_DIR, File::Spec->updir, File::Spec->updir, 'plugin', 'imaged.pm');
my $JSON    = JSON::PP->new->utf8->canonical;
my $SCRATCH;
my $RUNS = 0;

sub plugin_path { return $PLUGIN; }

sub scratch {
    $SCRATCH //= tempdir('imaged-test-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    return $SCRATCH;
}

# The next descriptor number the process would get (as Capture-Tiny's t/lib/Utils.pm).
sub next_fd {
    open my $fh, '<', File::Spec->devnull or die "cannot open /dev/null: $!\n";
    my $fd = fileno $fh;
    close $fh or die "cannot close /dev/null: $!\n";
    return $fd;
}

sub no_zombie { return waitpid(-1, WNOHANG) == -1; }

# An executable that runs the fake engine with the perl running the tests.
sub engine_wrapper {
    my $path = File::Spec->catfile(scratch(), 'fake-engine');
    return $path if -x $path;
    (my $q = $FAKE) =~ s/([\\'])/\\$1/g;
    open my $fh, '>', $path or die "cannot write $path: $!\n";
    print {$fh} "#!$^X\n", "exec { \$^X } \$^X, '$q', \@ARGV;\n", "die \"cannot exec $q: \$!\\n\";\n"
      or die "cannot write $path: $!\n";
    close $fh or die "cannot write $path: $!\n";
    chmod 0755, $path or die "cannot chmod $path: $!\n";
    return $path;
}

sub read_json {
    my ($file) = @_;
    return unless -e $file;
    open my $fh, '<:raw', $file or die "cannot read $file: $!\n";
    my $text = do { local $/ = undef; <$fh> };
    close $fh or die "cannot read $file: $!\n";
    return $JSON->decode($text);
}

sub write_json {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "cannot write $file: $!\n";
    print {$fh} $JSON->encode($data) or die "cannot write $file: $!\n";
    close $fh or die "cannot write $file: $!\n";
    return;
}

# A request as xcatd hands it to the plugin for a CLI client.
sub cli_request {
    my (%over) = @_;
    return {
        command          => ['rmimage'],
        arg              => [ 'img', undef, '-v' ],
        cwd              => ['/client/cwd'],
        clienttype       => ['cli'],
        environment      => [ { XCAT_FOO => ['bar'], XCAT_EMPTY => [undef] } ],
        username         => ['root'],
        _xcat_authname   => ['root'],
        _xcat_clienthost => ['localhost'],
        _xcatpreprocessed => [],
        %over,
    };
}

# ... and for xcatws (REST): no cwd, no environment, undef for flags given an empty value.
sub rest_request {
    my (%over) = @_;
    return {
        command        => ['packimage'],
        arg            => [ 'img', '--method', 'tar', '--nosyncfiles', undef ],
        clienttype     => ['ws'],
        remote_client  => ['localhost'],
        username       => ['wsuser'],
        _xcat_authname => ['wsuser'],
        %over,
    };
}

# Runs xCAT::Imaged::relay once. Arguments (all optional):
#   script => [steps] for the fake engine, request => hash, tables => initial tables,
#   env => {NAME => value|undef}, engine => path, grace => seconds, callback => code.
# Returns {responses, received (lines the engine read), events ("#..." lines), request (the
# decoded request line), request_line, tables (after), elapsed, fd_before, fd_after, zombie,
# exception}.
sub run_bridge {
    my (%a) = @_;
    my $n      = ++$RUNS;
    # The pid too: forked test processes (as xcatd forks per request) count runs alike.
    my $record = File::Spec->catfile(scratch(), "record.$$.$n");
    my $tables = File::Spec->catfile(scratch(), "tables.$$.$n.json");
    write_json($tables, $a{tables} // {});
    my %set = (
        XCAT_IMAGED_ENGINE     => $a{engine} // engine_wrapper(),
        XCAT_IMAGED_KILL_GRACE => $a{grace},
        FAKE_ENGINE_SCRIPT     => $JSON->encode($a{script} // []),
        FAKE_ENGINE_RECORD     => $record,
        XCAT_TEST_TABLES       => $tables,
        %{ $a{env} // {} },
    );
    local @ENV{ keys %set } = values %set;
    delete $ENV{$_} for grep { !defined $set{$_} } keys %set;

    my @responses;
    my $callback = $a{callback} // sub { push @responses, $_[0] };
    my %r;
    $r{fd_before} = next_fd();
    my $t0 = Time::HiRes::time();
    eval { xCAT::Imaged::relay($a{request} // cli_request(), $callback); 1 } or $r{exception} = $@;
    $r{elapsed}  = Time::HiRes::time() - $t0;
    $r{fd_after} = next_fd();
    $r{zombie}   = waitpid -1, WNOHANG;

    my @lines;
    if (open my $fh, '<:raw', $record) {
        chomp(@lines = <$fh>);
        close $fh or die "cannot read $record: $!\n";
    }
    $r{received}     = [ grep { !/\A#/ } @lines ];
    $r{events}       = [ grep { /\A#/ } @lines ];
    $r{request_line} = $r{received}[0];
    $r{request}      = defined $r{request_line} ? eval { $JSON->decode($r{request_line}) } : undef;
    $r{replies}      = [ map { $JSON->decode($_) } @{ $r{received} }[ 1 .. $#{ $r{received} } ] ];
    $r{tables}       = read_json($tables);
    $r{responses}    = \@responses;
    return \%r;
}

sub clean_ok {
    my ($r, $name) = @_;
    is($r->{fd_after}, $r->{fd_before}, "$name: no descriptor leaked");
    is($r->{zombie}, -1, "$name: no child left (no zombie)");
    return;
}

1;
