package xCAT::Imaged;

use strict;
use warnings;

use Carp qw(croak);
use Config;
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use Fcntl qw(F_DUPFD F_GETFD F_GETFL F_SETFD F_SETFL FD_CLOEXEC O_NONBLOCK);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes ();

use xCAT::PasswordUtils ();
use xCAT::Table ();
use xCAT::TableUtils ();

our $VERSION = '0.1.0';

# Fixed configuration (no request state lives at file scope).
my $PROTOCOL_VERSION = 1;
my $MAX_LINE         = 4 * 1024 * 1024;    # same cap as the engine (src/protocol.rs MAX_LINE)
my $READ_CHUNK       = 65_536;
my $DEFAULT_GRACE    = 30;                 # seconds; XCAT_IMAGED_KILL_GRACE overrides
my $ORPHAN_DRAIN     = 2;    # seconds to keep reading after the engine exited, pipe still open
my $POLL             = 0.05;
my $TICK             = 1;    # longest select wait, so deadlines are noticed even after a race
my %MESSAGE_TYPES    = map { $_ => 1 } qw(info data warning sinfo);
my $JSON             = JSON::PP->new->utf8->canonical->allow_nonref;

# Deadlines use the monotonic clock where there is one, so clock changes do not move them.
my $MONOTONIC = eval { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()); 1 };

my %SIGNAL_NAME;
{
    my @names = split ' ', $Config{sig_name};
    my @nums  = split ' ', $Config{sig_num};
    for my $i (0 .. $#nums) { $SIGNAL_NAME{ $nums[$i] } //= $names[$i]; }    # first name wins (ABRT, not IOT)
}

my %METHODS = (
    'table.get'            => \&_call_table_get,
    'table.list'           => \&_call_table_list,
    'table.set'            => \&_call_table_set,
    'table.delete'         => \&_call_table_delete,
    'site.get'             => \&_call_site_get,
    'xcat.system_password' => \&_call_system_password,
);

# ---------------------------------------------------------------------------------------------
# The one entry point.

sub relay {
    my ($request, $callback) = @_;
    my $root   = _xcatroot();
    my $engine = (defined $ENV{XCAT_IMAGED_ENGINE} && length $ENV{XCAT_IMAGED_ENGINE})
      ? $ENV{XCAT_IMAGED_ENGINE}
      : "$root/sbin/xcat-imaged";
    unless (-f $engine && -x _) {
        $callback->({ error => ["xcat-imaged engine not found or not executable: $engine"], errorcode => [1] });
        return;
    }
    my $line = _request_line($request, $root);
    unless (defined $line) {
        $callback->({ error => ['xcat-imaged: the request has no command'], errorcode => [1] });
        return;
    }

    # All state of this request.
    my %st = (
        callback => $callback,
        engine   => $engine,
        grace    => _grace(),
        out      => $line,     # bytes waiting to go to the engine's stdin
        in       => q{},       # bytes read from its stdout, not yet a whole line
    );

    local $SIG{PIPE} = 'IGNORE';     # a write to a dead engine must fail with EPIPE, not kill us
    local $SIG{CHLD} = 'DEFAULT';    # no inherited reaper may steal the engine's exit status
    local $SIG{INT}  = sub { _cancel(\%st) };
    local $SIG{TERM} = sub { _cancel(\%st) };

    my $ok  = eval { _spawn(\%st) && _run(\%st); 1 };
    my $err = $@;
    _cleanup(\%st, $ok);
    ## no critic (ErrorHandling::RequireCarping) -- rethrowing an exception (from the callback) as is
    die $err unless $ok;
    return;
}

# ---------------------------------------------------------------------------------------------
# The request line.

sub _xcatroot {
    return $::XCATROOT if defined $::XCATROOT && length $::XCATROOT;
    return $ENV{XCATROOT} if defined $ENV{XCATROOT} && length $ENV{XCATROOT};
    return '/opt/xcat';
}

sub _grace {
    my $g = $ENV{XCAT_IMAGED_KILL_GRACE};
    return $g if defined $g && $g =~ /\A[0-9]+(?:\.[0-9]+)?\z/ && $g > 0;
    return $DEFAULT_GRACE;
}

# First element of an xcatd request value (an array after XML ForceArray, a scalar from do_request).
sub _first {
    my ($v) = @_;
    $v = $v->[0] if ref $v eq 'ARRAY';
    return (defined $v && !ref $v) ? $v : undef;
}

sub _request_line {
    my ($request, $root) = @_;
    my $command = _first($request->{command});
    return unless defined $command && length $command;

    my $arg  = $request->{arg};
    my @args = grep { defined && !ref } (ref $arg eq 'ARRAY' ? @{$arg} : ($arg));

    my @pairs = (type => 'request', v => $PROTOCOL_VERSION, command => $command, args => \@args);
    my $cwd = _first($request->{cwd});
    push @pairs, cwd => $cwd if defined $cwd;
    my $user = _first($request->{_xcat_authname}) // _first($request->{username});
    push @pairs, user => $user if defined $user;
    my $clienttype = _first($request->{clienttype});
    push @pairs, clienttype => $clienttype if defined $clienttype;
    my $env = _environment($request->{environment});
    push @pairs, environment => $env if $env;
    push @pairs, xcatroot => $root;
    for my $i (grep { $_ % 2 } 0 .. $#pairs) {    # every value is text except v
        $pairs[$i] = _to_wire($pairs[$i]) unless $pairs[ $i - 1 ] eq 'v';
    }
    return _ordered_object(@pairs) . "\n";
}

# [{XCAT_FOO => ['bar']}] -> {XCAT_FOO => 'bar'}; undef when there is nothing.
sub _environment {
    my ($e) = @_;
    my @hashes = grep { ref eq 'HASH' } (ref $e eq 'ARRAY' ? @{$e} : ($e));
    my %flat;
    for my $h (@hashes) {
        for my $k (keys %{$h}) {
            my $v = _first($h->{$k});
            $flat{$k} = $v // q{};    # an empty variable arrives as undef (SuppressEmpty)
        }
    }
    return %flat ? \%flat : undef;
}

# A JSON object with its keys in the order given (the request and reply lines read naturally).
# Values must be wire-ready already (see _to_wire): numbers stay numbers.
sub _ordered_object {
    my @pairs = @_;
    my @parts;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        push @parts, $JSON->encode($k) . q{:} . $JSON->encode($v);
    }
    return '{' . join(q{,}, @parts) . '}';
}

# Perl side strings are bytes (xCAT's tables and files hold UTF-8 bytes); the wire carries
# characters. _to_wire decodes valid UTF-8 bytes, _from_wire encodes characters back to bytes.
sub _to_wire {
    my ($v) = @_;
    return _deep($v, sub {
        my ($s) = @_;
        utf8::decode($s) unless utf8::is_utf8($s);    # invalid UTF-8 stays as Latin-1
        return $s;
    });
}

sub _from_wire {
    my ($v) = @_;
    return _deep($v, sub {
        my ($s) = @_;
        utf8::encode($s);
        return $s;
    });
}

sub _deep {
    my ($v, $f) = @_;
    my $r = ref $v;
    return $f->($v) if defined $v && !$r;
    return { map { $f->($_) => _deep($v->{$_}, $f) } keys %{$v} } if $r eq 'HASH';
    return [ map { _deep($_, $f) } @{$v} ] if $r eq 'ARRAY';
    return $v;    # undef, JSON booleans
}

# ---------------------------------------------------------------------------------------------
# Starting the engine: fork + exec of an argument vector, same process group, stderr inherited.

sub _spawn {
    my ($st) = @_;
    my ($child_in, $to_engine, $from_engine, $child_out, $status_r, $status_w);
    unless (pipe($child_in, $to_engine) && pipe($from_engine, $child_out) && pipe($status_r, $status_w)) {
        _start_failed($st, "pipe: $!");
        return 0;
    }
    my @all = ($child_in, $to_engine, $from_engine, $child_out, $status_r, $status_w);
    _set_cloexec($_) for @all;

    my $pid = fork;
    unless (defined $pid) {
        my $why = "fork: $!";
        close $_ for @all;
        _start_failed($st, $why);
        return 0;
    }
    if ($pid == 0) {
        _child($st->{engine}, $child_in, $child_out, $status_w);    # never returns
    }

    $st->{pid} = $pid;
    close $child_in;
    close $child_out;
    close $status_w;
    $st->{to}   = $to_engine;
    $st->{from} = $from_engine;
    kill 'TERM', $pid if $st->{cancel_at};    # a signal came while we were forking

    # The status pipe closes on a successful exec; otherwise it carries exec's errno.
    my $report = q{};
    while (1) {
        my $n = sysread $status_r, $report, 64, length $report;
        next if !defined $n && $! == EINTR;
        last unless $n;
    }
    close $status_r;
    if (length $report) {
        local $! = $report + 0;
        my $why = "$!";
        _close_engine_fds($st);
        _wait_exit($st, $st->{grace}) or _kill_now($st);
        _start_failed($st, $why);
        return 0;
    }

    my $flags = fcntl $to_engine, F_GETFL, 0;
    fcntl $to_engine, F_SETFL, $flags | O_NONBLOCK if defined $flags;    # never block on writes
    return 1;
}

sub _child {
    my ($engine, $in, $out, $status) = @_;
    eval {
        $SIG{$_} = 'DEFAULT' for qw(PIPE INT TERM CHLD);    ## no critic (RequireLocalizedPunctuationVars) -- the child execs next
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new);
        # Move the pipe ends above the standard descriptors first, then onto 0 and 1.
        my $hi_in  = fcntl $in,  F_DUPFD, 10;
        my $hi_out = fcntl $out, F_DUPFD, 10;
        croak "dup: $!" unless defined $hi_in && defined $hi_out;    # caught below, reported as errno
        POSIX::dup2($hi_in,  0) // croak "dup2: $!";
        POSIX::dup2($hi_out, 1) // croak "dup2: $!";
        POSIX::close($hi_in);
        POSIX::close($hi_out);
        { no warnings 'exec'; exec { $engine } $engine, 'serve'; }    ## no critic (ProhibitNoWarnings) -- failure is reported through the status pipe
        1;
    };
    my $errno = ($! + 0) || 1;
    syswrite $status, "$errno";
    POSIX::_exit(127);    # no END blocks or destructors of the xcatd process in the child
    return;
}

sub _set_cloexec {
    my ($fh) = @_;
    my $fl = fcntl $fh, F_GETFD, 0;
    fcntl $fh, F_SETFD, $fl | FD_CLOEXEC if defined $fl;
    return;
}

sub _start_failed {
    my ($st, $why) = @_;
    _report($st, "xcat-imaged engine could not be started: $st->{engine}: $why");
    return;
}

# ---------------------------------------------------------------------------------------------
# Relaying.

sub _run {
    my ($st) = @_;
    while (!$st->{finished}) {
        _reap($st, WNOHANG) unless $st->{reaped};
        if ($st->{reaped} && !defined $st->{orphan_until}) {
            # The engine is gone; something it started may still hold the pipe open.
            $st->{orphan_until} = _now() + $ORPHAN_DRAIN;
        }
        my $now = _now();
        if ($st->{cancel_at} && !$st->{reaped} && $now >= $st->{cancel_at} + $st->{grace}) {
            _kill_now($st);
            _report($st, sprintf 'xcat-imaged did not stop within %s after cancellation and was killed',
                _seconds($st->{grace}));
            $st->{finished} = 1;
            last;
        }
        if (defined $st->{orphan_until} && $now >= $st->{orphan_until}) {
            _ended_without_done($st);
            last;
        }

        my $timeout = $TICK;
        $timeout = _min($timeout, $st->{cancel_at} + $st->{grace} - $now) if $st->{cancel_at};
        $timeout = _min($timeout, $st->{orphan_until} - $now) if defined $st->{orphan_until};
        $timeout = 0 if $timeout < 0;

        my ($rin, $win) = (q{}, q{});
        vec($rin, fileno $st->{from}, 1) = 1;
        my $writing = $st->{to} && length $st->{out};
        vec($win, fileno $st->{to}, 1) = 1 if $writing;
        my $n = select(my $rout = $rin, my $wout = $win, undef, $timeout);
        if ($n < 0) {
            next if $! == EINTR;
            croak "xcat-imaged bridge: select failed: $!";    # xcatd reports a die as the plugin's error
        }
        next if $n == 0;
        _write_some($st) if $writing && vec $wout, fileno $st->{to}, 1;
        _read_some($st) if vec $rout, fileno $st->{from}, 1;
    }
    return 1;
}

sub _write_some {
    my ($st) = @_;
    my $n = syswrite $st->{to}, $st->{out};
    if (defined $n) {
        substr $st->{out}, 0, $n, q{};
        return;
    }
    return if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
    # The engine closed its stdin (or died). Stop writing; its stdout tells how it ended.
    close $st->{to};
    $st->{to}  = undef;
    $st->{out} = q{};
    return;
}

sub _read_some {
    my ($st) = @_;
    my $n = sysread $st->{from}, $st->{in}, $READ_CHUNK, length $st->{in};
    if (!defined $n) {
        return if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
        $n = 0;    # a read error ends the stream like EOF
    }
    while (!$st->{finished} && (my $nl = index $st->{in}, "\n") >= 0) {
        my $line = substr $st->{in}, 0, $nl + 1, q{};
        chop $line;
        _handle_line($st, $line);
    }
    return if $st->{finished};
    if (length $st->{in} > $MAX_LINE) {
        _protocol_error($st, "line longer than $MAX_LINE bytes");
        return;
    }
    if ($n == 0) {
        if (length $st->{in}) {    # a last line without its newline still counts
            my $line = $st->{in};
            $st->{in} = q{};
            _handle_line($st, $line);
            return if $st->{finished};
        }
        _ended_without_done($st);
    }
    return;
}

sub _handle_line {
    my ($st, $line) = @_;
    return _protocol_error($st, "line longer than $MAX_LINE bytes") if length $line > $MAX_LINE;
    my $msg;
    unless (eval { $msg = $JSON->decode($line); 1 }) {
        (my $why = $@) =~ s/,? at \S+ line \d+\.?\s*\z//;
        return _protocol_error($st, sprintf 'line is not valid JSON (%s): %s', $why, _excerpt($line));
    }
    return _protocol_error($st, 'message is not a JSON object: ' . _excerpt($line)) unless ref $msg eq 'HASH';
    my $type = $msg->{type};
    return _protocol_error($st, 'message has no type: ' . _excerpt($line)) unless _is_string($type);

    if ($MESSAGE_TYPES{$type}) {
        return _protocol_error($st, qq{"$type" message has no text}) unless _is_string($msg->{text});
        $st->{callback}->({ $type => [ _from_wire($msg->{text}) ] });
        return;
    }
    if ($type eq 'error') {
        return _protocol_error($st, '"error" message has no text') unless _is_string($msg->{text});
        return _protocol_error($st, '"error" message has no integer errorcode') unless _is_int($msg->{errorcode});
        my $code = 0 + $msg->{errorcode};
        $st->{error_seen} = 1 if $code;
        $st->{callback}->({ error => [ _from_wire($msg->{text}) ], errorcode => [$code] });
        return;
    }
    if ($type eq 'call') {
        return _protocol_error($st, 'call has no integer id') unless _is_int($msg->{id}) && $msg->{id} >= 0;
        return _protocol_error($st, 'call has no method') unless _is_string($msg->{method});
        _queue($st, _answer($msg->{id}, $msg->{method}, $msg->{params}));
        return;
    }
    if ($type eq 'done') {
        return _protocol_error($st, '"done" message has no integer errorcode') unless _is_int($msg->{errorcode});
        my $code = 0 + $msg->{errorcode};
        $st->{finished} = 1;
        $st->{done}     = $code;
        if ($code && !$st->{error_seen}) {
            _report($st, "xcat-imaged finished with errorcode $code without reporting an error", $code);
        }
        return;
    }
    return _protocol_error($st, 'unknown message type ' . $JSON->encode($type));
}

sub _queue {
    my ($st, $reply) = @_;
    $st->{out} .= $reply . "\n" if $st->{to};    # a closed stdin cannot take answers any more
    return;
}

# One message for each way things can end badly; errorcode 1 unless told.
sub _report {
    my ($st, $text, $code) = @_;
    $st->{callback}->({ error => [$text], errorcode => [ $code // 1 ] });
    return;
}

sub _protocol_error {
    my ($st, $what) = @_;
    _report($st, "xcat-imaged protocol error: $what");
    $st->{finished} = 1;    # _cleanup closes its stdin, sends TERM, then KILL after the grace
    return;
}

sub _ended_without_done {
    my ($st) = @_;
    $st->{finished} = 1;
    _close_engine_fds($st);
    unless ($st->{reaped} || _wait_exit($st, $st->{grace})) {
        _kill_now($st);
        _report($st, sprintf 'xcat-imaged closed its output without finishing and was killed after %s',
            _seconds($st->{grace}));
        return;
    }
    _report($st, 'xcat-imaged ended without finishing: ' . _how_it_ended($st->{status}));
    return;
}

sub _how_it_ended {
    my ($status) = @_;
    return 'exit status unknown' unless defined $status;
    my $sig = $status & 127;
    if ($sig) {
        my $name = $SIGNAL_NAME{$sig} // '?';
        return "killed by signal $sig ($name)" . (($status & 128) ? ', core dumped' : q{});
    }
    return 'exit status ' . ($status >> 8);
}

sub _cancel {
    my ($st) = @_;
    $st->{cancel_at} //= _now();
    kill 'TERM', $st->{pid} if $st->{pid} && !$st->{reaped};
    return;
}

# ---------------------------------------------------------------------------------------------
# Ending: every path comes here, also after an exception. Afterwards the engine is reaped and
# every descriptor we opened is closed.

# $ok is false after an exception (maybe from the callback): then the callback is not used.
sub _cleanup {
    my ($st, $ok) = @_;
    if ($st->{pid} && !$st->{reaped}) {
        if (defined $st->{done}) {
            _close_engine_fds($st);
            unless (_wait_exit($st, $st->{grace})) {
                _kill_now($st);
                $st->{callback}->({ warning => [ sprintf 'xcat-imaged did not exit within %s after finishing and was killed',
                    _seconds($st->{grace}) ] }) if $ok;
            }
        } else {    # protocol error or an exception: ask it to stop, then insist
            _close_stdin($st);    # stdin EOF means cancel too; stdout is drained while waiting
            kill 'TERM', $st->{pid};
            _wait_exit($st, $st->{grace}) or _kill_now($st);
        }
    }
    _close_engine_fds($st);
    return;
}

sub _close_stdin {
    my ($st) = @_;
    if ($st->{to}) { close $st->{to}; $st->{to} = undef; }
    $st->{out} = q{};
    return;
}

sub _close_engine_fds {
    my ($st) = @_;
    _close_stdin($st);
    if ($st->{from}) { close $st->{from}; $st->{from} = undef; }
    return;
}

sub _reap {
    my ($st, $flags) = @_;
    my $r = waitpid $st->{pid}, $flags;
    if ($r == $st->{pid}) {
        $st->{status} = $?;
        $st->{reaped} = 1;
    } elsif ($r < 0) {
        $st->{reaped} = 1;    # reaped elsewhere; the status is lost
    }
    return $st->{reaped};
}

# Waits up to $secs for the engine to exit, reading (and dropping) what it still writes.
sub _wait_exit {
    my ($st, $secs) = @_;
    my $deadline = _now() + $secs;
    until (_reap($st, WNOHANG)) {
        my $left = $deadline - _now();
        return 0 if $left <= 0;
        if ($st->{from}) {
            my $rin = q{};
            vec($rin, fileno $st->{from}, 1) = 1;
            my $n = select(my $rout = $rin, undef, undef, _min($left, $POLL));
            if ($n > 0) {
                my $junk;
                my $got = sysread $st->{from}, $junk, $READ_CHUNK;
                if ((defined $got && $got == 0) || (!defined $got && $! != EINTR)) {
                    close $st->{from};
                    $st->{from} = undef;
                }
            }
        } else {
            Time::HiRes::sleep(_min($left, $POLL));
        }
    }
    return 1;
}

sub _kill_now {
    my ($st) = @_;
    return if $st->{reaped};
    kill 'KILL', $st->{pid};
    _reap($st, 0);
    return;
}

# ---------------------------------------------------------------------------------------------
# Answering calls. Each answer is one reply line; every call gets one, in order.

sub _answer {
    my ($id, $method, $params) = @_;
    my $handler = $METHODS{$method};
    my ($ok, $result, $error);
    if (!$handler) {
        ($ok, $error) = (0, "unknown method $method");
    } elsif (defined $params && ref $params ne 'HASH') {
        ($ok, $error) = (0, "bad params for $method: not an object");
    } else {
        my @r = eval { $handler->(_from_wire($params // {})) };
        if (!@r) {
            (my $why = $@ || 'unknown failure') =~ s/\s+\z//;
            ($ok, $error) = (0, $why);
        } else {
            ($ok, $result, $error) = @r;
        }
    }
    return _ordered_object(type => 'reply', id => 0 + $id, ok => JSON::PP::true(), result => _to_wire($result)) if $ok;
    return _ordered_object(type => 'reply', id => 0 + $id, ok => JSON::PP::false(), error => _to_wire($error));
}

# Handlers return (1, result) or (0, undef, error); they may also die.
sub _fail { my ($text) = @_; return (0, undef, $text); }

sub _open_table {
    my ($name) = @_;
    return xCAT::Table->new($name, -create => 1);
}

sub _call_table_get {
    my ($p) = @_;
    my $bad = _check($p, 'table.get', table => 'string', keys => 'row', attrs => 'strings');
    return _fail($bad) if $bad;
    my $tab = _open_table($p->{table}) or return _fail("Can not open $p->{table} table.");
    my $row = $tab->getAttribs($p->{keys}, @{ $p->{attrs} });    # scalar context: the first row
    $tab->close;
    return (1, scalar _row($row));
}

sub _call_table_list {
    my ($p) = @_;
    my $bad = _check($p, 'table.list', table => 'string', where => 'strings', attrs => 'strings');
    return _fail($bad) if $bad;
    return _fail('table.list needs at least one condition in where') unless @{ $p->{where} };
    my $tab = _open_table($p->{table}) or return _fail("Can not open $p->{table} table.");
    my @rows = $tab->getAllAttribsWhere($p->{where}, @{ $p->{attrs} });
    $tab->close;
    return (1, [ grep { defined } map { _row($_) } @rows ]);
}

sub _call_table_set {
    my ($p) = @_;
    my $bad = _check($p, 'table.set', table => 'string', keys => 'row', values => 'row');
    return _fail($bad) if $bad;
    my $tab = _open_table($p->{table}) or return _fail("Can not open $p->{table} table.");
    my ($rc, $err) = $tab->setAttribs($p->{keys}, $p->{values});
    $tab->close;
    return _fail($err) if !defined $rc && defined $err;
    return (1, undef);
}

sub _call_table_delete {
    my ($p) = @_;
    my $bad = _check($p, 'table.delete', table => 'string', keys => 'row');
    return _fail($bad) if $bad;
    return _fail('table.delete needs at least one key') unless %{ $p->{keys} };
    my $tab = _open_table($p->{table}) or return _fail("Can not open $p->{table} table.");
    $tab->delEntries($p->{keys});
    $tab->close;
    return (1, undef);
}

sub _call_site_get {
    my ($p) = @_;
    my $bad = _check($p, 'site.get', key => 'string');
    return _fail($bad) if $bad;
    my ($value) = xCAT::TableUtils->get_site_attribute($p->{key});
    return (1, _string($value));
}

sub _call_system_password {
    # A plain function call: it reads its first argument as the table name.
    my ($crypted) = xCAT::PasswordUtils::crypt_system_password();
    return (1, _string($crypted));
}

# Checks params against a tiny schema; returns the complaint or undef.
sub _check {
    my ($p, $method, %want) = @_;
    for my $k (sort keys %want) {
        my $v    = $p->{$k};
        my $kind = $want{$k};
        my $good =
            $kind eq 'string'  ? _is_string($v) && length $v
          : $kind eq 'strings' ? ref $v eq 'ARRAY' && !grep { !_is_string($_) } @{$v}
          : $kind eq 'row'     ? ref $v eq 'HASH' && !grep { ref } values %{$v}
          :                      0;
        next if $good;
        my %say = (string => 'a non-empty string', strings => 'an array of strings', row => 'an object of strings');
        return "bad params for $method: \"$k\" must be $say{$kind}";
    }
    return;
}

# A row as the protocol wants it: defined values only, all strings; null for no row.
sub _row {
    my ($row) = @_;
    return unless ref $row eq 'HASH';
    my %out;
    for my $k (keys %{$row}) {
        my $v = $row->{$k};
        $out{$k} = "$v" if defined $v && !ref $v;
    }
    return \%out;
}

sub _string {
    my ($v) = @_;
    return (defined $v && !ref $v) ? "$v" : undef;
}

# ---------------------------------------------------------------------------------------------
# Small helpers.

sub _is_string { my ($v) = @_; return defined $v && !ref $v; }

sub _is_int {
    my ($v) = @_;
    return defined $v && !ref $v && $v =~ /\A-?[0-9]{1,18}\z/;
}

sub _min { my ($x, $y) = @_; return $x < $y ? $x : $y; }

sub _now { return $MONOTONIC ? Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) : Time::HiRes::time(); }

sub _seconds { my ($n) = @_; return $n == 1 ? '1 second' : "$n seconds"; }

sub _excerpt {
    my ($line) = @_;
    my $s = length $line > 80 ? substr($line, 0, 80) . '...' : $line;
    $s =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
    return qq{"$s"};
}

1;

__END__

=head1 NAME

xCAT::Imaged - relay one xcatd request to the xcat-imaged engine and back

=head1 SYNOPSIS

    # in an xcatd plugin (plugin/imaged.pm)
    use xCAT::Imaged;

    sub process_request {
        my ($request, $callback) = @_;
        xCAT::Imaged::relay($request, $callback);    # never uses the shell
        return;
    }

=head1 DESCRIPTION

C<relay($request, $callback)> starts C<$XCATROOT/sbin/xcat-imaged serve> (or the program named by
C<$ENV{XCAT_IMAGED_ENGINE}>) from an argument vector with fork and exec, never through a shell. The
engine stays in the caller's process group, because xcatd signals the plugin's process group when
the client aborts, and it inherits stderr, which carries its log output only.

The bridge knows no command. It writes one request line (protocol v1, JSON) built from the xcatd
request hash: C<command>, C<args> (C<arg> with undef entries dropped), C<cwd>, C<user>
(C<_xcat_authname>, else C<username>), C<clienttype>, C<environment> (flattened from
C<[{XCAT_FOO =E<gt> ['bar']}]> to C<{XCAT_FOO =E<gt> 'bar'}>) and C<xcatroot>. Absent values are
left out.

Then it reads the engine's lines and maps each to one callback payload:
C<info>, C<data>, C<warning> and C<sinfo> to C<{TYPE =E<gt> [text]}>, C<error> to
C<{error =E<gt> [text], errorcode =E<gt> [n]}>. A C<call> is answered with one C<reply> line, in
order, using xCAT's own APIs:

    table.get            xCAT::Table->new(T, -create=>1)->getAttribs(\%keys, @attrs)
    table.list           ...->getAllAttribsWhere(\@where, @attrs)
    table.set            ...->setAttribs(\%keys, \%values)   (undef, $err) is a failed reply
    table.delete         ...->delEntries(\%keys)             empty keys are refused
    site.get             xCAT::TableUtils->get_site_attribute($key)
    xcat.system_password xCAT::PasswordUtils::crypt_system_password()

C<done> ends the relay: the bridge closes the engine's stdin and reaps it.

Texts travel as characters on the wire and as UTF-8 bytes on the Perl side (xCAT's tables and
callbacks hold bytes).

While relaying, SIGINT and SIGTERM are caught (with C<local>) and forwarded to the engine as
SIGTERM; SIGPIPE is ignored and every write is checked. An engine that has not sent C<done> within
the grace period after a cancellation (30 seconds, or C<$ENV{XCAT_IMAGED_KILL_GRACE}>) is killed.
Per-request state lives in one lexical hash; the engine is always reaped and every descriptor
closed, also when the callback dies (the exception is rethrown afterwards).

=head1 DIAGNOSTICS

Each is sent as C<{error =E<gt> [text], errorcode =E<gt> [1]}> unless said otherwise.

=over

=item C<xcat-imaged engine not found or not executable: PATH>

Neither C<$ENV{XCAT_IMAGED_ENGINE}> nor C<$XCATROOT/sbin/xcat-imaged> names an executable file.

=item C<xcat-imaged: the request has no command>

The request hash had no C<command>.

=item C<xcat-imaged engine could not be started: PATH: REASON>

C<pipe>, C<fork> or C<exec> failed; REASON is the system's error text.

=item C<xcat-imaged protocol error: DETAIL>

The engine wrote a line that is not a valid protocol message. DETAIL is one of: C<line is not
valid JSON (PARSER MESSAGE): "LINE">, C<message is not a JSON object: "LINE">, C<message has no
type: "LINE">, C<unknown message type "T">, C<"T" message has no text>, C<"error" message has no
integer errorcode>, C<"done" message has no integer errorcode>, C<call has no integer id>,
C<call has no method>, C<line longer than 4194304 bytes>. It is reported once; the bridge then
closes the engine's stdin, sends SIGTERM, drops whatever else it writes and sends SIGKILL if it
has not exited within the grace period.

=item C<xcat-imaged ended without finishing: exit status N>

=item C<xcat-imaged ended without finishing: killed by signal S (NAME)>

The engine's output ended without C<done>; the text says how the process ended (C<, core dumped>
may follow the signal, C<exit status unknown> if something else reaped it).

=item C<xcat-imaged closed its output without finishing and was killed after N seconds>

The output ended without C<done> and the process did not exit within the grace period.

=item C<xcat-imaged did not stop within N seconds after cancellation and was killed>

SIGINT or SIGTERM arrived, was forwarded, and no C<done> followed within the grace period.

=item C<xcat-imaged finished with errorcode N without reporting an error>

C<done> carried a non-zero errorcode but no C<error> message with a non-zero errorcode came
before it; sent with C<errorcode =E<gt> [N]> so that the failure is not lost.

=item C<xcat-imaged did not exit within N seconds after finishing and was killed>

Sent as C<{warning =E<gt> [text]}>: the engine sent C<done> but did not exit.

=back

Failed replies to the engine (not callback messages): C<Can not open T table.>, C<unknown method
M>, C<bad params for M: "K" must be ...>, C<table.list needs at least one condition in where>,
C<table.delete needs at least one key>, the error text of C<setAttribs>, or the text of an
exception raised by xCAT's table code.

=head1 ENVIRONMENT

C<XCAT_IMAGED_ENGINE> (the engine's path, for tests), C<XCAT_IMAGED_KILL_GRACE> (seconds),
C<XCATROOT> (when C<$::XCATROOT> is not set).

=cut
