#!/usr/bin/perl

# A stand-in for "xcat-imaged serve", for testing the bridge. It reads the request line, then
# follows the script in $ENV{FAKE_ENGINE_SCRIPT}: a JSON array of one-key steps. Everything it
# receives from the bridge, and every notable event, is appended to $ENV{FAKE_ENGINE_RECORD}:
# received lines verbatim, events as lines starting with "#".
#
# Steps:
#   {"send": {...}}          print the object as one JSON line
#   {"raw": "text"}          print the text exactly (add "\n" yourself)
#   {"raw_repeat": [PREFIX, TEXT, N]}  print PREFIX, then TEXT N times (no newline)
#   {"call": {"method": M, "params": P}}
#                            send a call with the next id, read the reply line and record it
#   {"calls": [{...}, ...]}  send several calls, then read (and record) as many replies
#   {"spam": N}              send N info lines "line 1" .. "line N"
#   {"trap": ["TERM", ...]}  record those signals ("#signal TERM") and go on
#   {"ignore": ["TERM"]}     ignore those signals
#   {"signal_parent": "TERM"}  send a signal to the parent (the bridge)
#   {"touch": PATH}          create a file (tells a test the engine got this far)
#   {"wait_signal": SECS}    wait until a trapped signal arrives (records "#timeout" if none)
#   {"sleep": SECS}          sleep, whatever signals come (trapped or ignored ones)
#   {"read_eof": SECS}       read stdin until EOF (records "#eof") or SECS pass ("#no-eof")
#   {"close_stdout": 1}      close stdout
#   {"holder": SECS}         fork a process that keeps stdout open for SECS, then exits
#   {"exit": N}              exit with status N
#   {"kill_self": "KILL"}    die by that signal
# The script ends with exit 0. With $ENV{FAKE_ENGINE_NO_READ} set it does not read the request.

use strict;
use warnings;
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

our $VERSION = '0.1.0';

## no critic (Variables::RequireLocalizedPunctuationVars) -- signal dispositions set by steps are meant to last

my $JSON   = JSON::PP->new->utf8->canonical;
my $RECORD = $ENV{FAKE_ENGINE_RECORD};
my %caught;
my $next_id = 0;

sub note {
    my ($text) = @_;
    return unless defined $RECORD && length $RECORD;
    open my $fh, '>>:raw', $RECORD or die "fake-engine: cannot append to $RECORD: $!\n";
    print {$fh} $text, "\n" or die "fake-engine: cannot write $RECORD: $!\n";
    close $fh or die "fake-engine: cannot write $RECORD: $!\n";
    return;
}

sub out {
    my ($bytes) = @_;
    while (length $bytes) {
        my $n = syswrite STDOUT, $bytes;
        if (!defined $n) { note("#write-failed $!"); return; }    # with PIPE ignored: EPIPE
        substr $bytes, 0, $n, q{};
    }
    return;
}

sub send_msg { my ($m) = @_; out($JSON->encode($m) . "\n"); return; }

sub read_line {
    my $in   = \*STDIN;    # the protocol channel, not a prompt
    my $line = <$in>;
    if (!defined $line) { note('#eof'); return; }
    chomp $line;
    note($line);
    return $line;
}

sub call_msg {
    my ($c) = @_;
    my %m = (type => 'call', id => ++$next_id, method => $c->{method});
    $m{params} = $c->{params} if exists $c->{params};
    return \%m;
}

my %STEP = (
    send  => sub { send_msg($_[0]) },
    raw   => sub { out($_[0]) },
    raw_repeat => sub { my ($prefix, $text, $n) = @{ $_[0] }; out($prefix . ($text x $n)); },
    call  => sub { send_msg(call_msg($_[0])); read_line(); },
    calls => sub {
        send_msg(call_msg($_)) for @{ $_[0] };
        read_line() for @{ $_[0] };
    },
    spam => sub { send_msg({ type => 'info', text => "line $_" }) for 1 .. $_[0] },
    trap => sub {
        for my $sig (@{ $_[0] }) {
            $SIG{$sig} = sub { $caught{$sig}++; note("#signal $sig"); };
        }
    },
    ignore        => sub { $SIG{$_} = 'IGNORE' for @{ $_[0] } },
    signal_parent => sub { kill $_[0], getppid },
    touch         => sub {
        open my $fh, '>', $_[0] or die "fake-engine: cannot create $_[0]: $!\n";
        close $fh or die "fake-engine: cannot create $_[0]: $!\n";
    },
    wait_signal => sub {
        my $deadline = Time::HiRes::time() + $_[0];
        while (!%caught) {
            if (Time::HiRes::time() > $deadline) { note('#timeout'); return; }
            Time::HiRes::sleep(0.02);
        }
    },
    sleep => sub {
        my $deadline = Time::HiRes::time() + $_[0];
        while ((my $left = $deadline - Time::HiRes::time()) > 0) { Time::HiRes::sleep($left); }
    },
    read_eof => sub {
        my ($secs) = @_;
        local $SIG{ALRM} = sub { die "alarm\n" };
        my $ok = eval {
            Time::HiRes::alarm($secs);
            while (defined(my $l = read_line())) { }
            Time::HiRes::alarm(0);
            1;
        };
        note('#no-eof') unless $ok;
    },
    close_stdout => sub { close STDOUT or die "fake-engine: close: $!\n" },
    holder       => sub {
        my $secs = $_[0];
        my $pid  = fork;
        die "fake-engine: fork: $!\n" unless defined $pid;
        if ($pid == 0) {
            open STDERR, '>', '/dev/null' or POSIX::_exit(1);
            Time::HiRes::sleep($secs);
            POSIX::_exit(0);
        }
    },
    exit      => sub { POSIX::_exit($_[0]) },
    kill_self => sub { $SIG{ $_[0] } = 'DEFAULT'; kill $_[0], $$; Time::HiRes::sleep(5); POSIX::_exit(99); },
);

my $steps = $JSON->decode($ENV{FAKE_ENGINE_SCRIPT} // '[]');
read_line() unless $ENV{FAKE_ENGINE_NO_READ};
for my $step (@{$steps}) {
    my ($name) = keys %{$step};
    my $run = $STEP{$name} or die "fake-engine: unknown step $name\n";
    $run->($step->{$name});
}
POSIX::_exit(0);
