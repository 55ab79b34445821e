package xCAT::Table;

# Test double of xCAT's xCAT::Table (perl-xCAT/xCAT/Table.pm): the same call shapes and return
# conventions, over in-memory tables loaded from the JSON file named by $ENV{XCAT_TEST_TABLES}
# ({"site":[{"key":"installdir","value":"/tmp/x"}], "osimage":[...], ...}) and written back after
# every change. Each call re-reads the file, as the real one reads the database on every call.
#
# Behaviour mirrored from the real module (SQLite backend, autocommit):
# - new: undef for a table not in the schema, or absent with -create=>0; -create defaults to 1
#   and creates an empty table.
# - getAttribs: a key with a false value (undef, '' or '0') matches NULL; rows whose disable
#   column is set (other than 0/no) are skipped; only asked columns with a non-empty value are
#   returned; rows with none of them are dropped; list context gives every row, scalar context
#   the first; undef when nothing is left. An unknown key column gives undef.
# - getAllAttribsWhere: conditions "attr==v", "attr!=v", "attr=~v", "attr!~v", "<", "<=", ">",
#   ">=", ANDed. =~ and !~ are SQL LIKE / NOT LIKE (% and _ wildcards, ASCII case-insensitive,
#   a leading and trailing "/" stripped), not Perl regexes. NULL never compares true. 'ALL' gives
#   every column (empty as undef). An unknown operator or column, an empty list, or a ' in a
#   value makes the real SQL fail, and the real code then dies; so does this double.
# - setAttribs: update every row matching the keys ("NULL" as a value clears a column), else
#   insert (missing primary keys become ''); a row with nothing in it is not inserted and the
#   call returns empty; success returns 0. An unknown column to update returns
#   (undef, "Error attempting requested DB operation"); an unknown key column, or an unknown
#   column in an insert, makes the real code call execute on a failed prepare, and die.
# - delEntries: a hashref, an arrayref of hashrefs (ORed), or nothing (every row); an empty
#   hash or an unknown column dies, like the real SQL.

use strict;
use warnings;
use Carp qw(croak);
use JSON::PP ();

our $VERSION = '0.1.0';

my %SCHEMA = (
    site       => { keys => [qw(key)], cols => [qw(key value comments disable)] },
    passwd     => { keys => [qw(key username)], cols => [qw(key username password cryptmethod authdomain comments disable)] },
    osimage    => {
        keys => [qw(imagename)],
        cols => [
            qw(imagename groups profile imagetype description provmethod rootfstype nfsrootopts osdistroname
              osupdatename cfmdir osname osvers osarch synclists postscripts postbootscripts serverrole isdeletable
              kitcomponents environvar comments disable)
        ],
    },
    linuximage => {
        keys => [qw(imagename)],
        cols => [
            qw(imagename template boottarget addkcmdline pkglist pkgdir otherpkglist otherpkgdir exlist postinstall
              rootimgdir kerneldir nodebootif otherifce netdrivers kernelver krpmver permission dump crashkernelsize
              partitionfile driverupdatesrc comments disable)
        ],
    },
    winimage => { keys => [qw(imagename)], cols => [qw(imagename template installto partitionfile winpepath comments disable)] },
    nimimage => {
        keys => [qw(imagename)],
        cols => [
            qw(imagename nimtype lpp_source spot root dump paging resolv_conf tmp home shared_home res_group nimmethod
              script bosinst_data installp_bundle mksysb fb_script shared_root otherpkgs image_data configdump comments
              disable)
        ],
    },
    litefile => { keys => [qw(image file)], cols => [qw(image file options comments disable)] },
    osdistro => { keys => [qw(osdistroname)], cols => [qw(osdistroname basename majorversion minorversion arch type dirpaths comments disable)] },
    nodetype => { keys => [qw(node)], cols => [qw(node os arch profile provmethod supportedarchs nodetype comments disable)] },
    nodelist => {
        keys => [qw(node)],
        cols => [
            qw(node groups status statustime appstatus appstatustime primarysn hidden updatestatus updatestatustime
              zonename comments disable)
        ],
    },
);

my $JSON = JSON::PP->new->utf8->canonical->pretty;

## no critic (Subroutines::ProhibitExplicitReturnUndef) -- the real API returns undef explicitly;
## callers rely on "(my $ref) = ...->getAttribs(...)" getting (undef), so the double must too.

sub new {
    my ($proto, $name, %opt) = @_;
    return undef unless defined $name && $SCHEMA{$name};
    my $create = !(exists $opt{-create} && defined $opt{-create} && $opt{-create} == 0);
    my $db     = _load();
    unless ($db->{$name}) {
        return undef unless $create;
        $db->{$name} = [];
        _save($db);
    }
    my $autocommit = defined $opt{-autocommit} ? $opt{-autocommit} : 1;
    return bless { tabname => $name, autocommit => $autocommit }, ref($proto) || $proto;
}

sub getAttribs {    ## no critic (NamingConventions::Capitalization) -- xCAT's method name
    my ($self, $keys, @attrs) = @_;
    # Test hook: a slow database, so a test can cancel the engine while it waits for a reply.
    sleep $ENV{XCAT_TEST_TABLE_DELAY} if $ENV{XCAT_TEST_TABLE_DELAY};
    my %keys = %{$keys};
    @attrs = @{ $attrs[0] } if ref $attrs[0];
    my $cols = $self->_cols;
    for (keys %keys) { return undef unless $cols->{$_}; }    # prepare fails: no such column
    my @out;
  ROW: for my $row (@{ _load()->{ $self->{tabname} } || [] }) {
        next if _disabled($row);
        for my $k (keys %keys) {
            my $want = $keys{$k};
            $want = $want->[0] if ref $want;
            if ($want) { next ROW unless defined $row->{$k} && $row->{$k} eq $want; }
            else       { next ROW if defined $row->{$k}; }
        }
        my %r = _pick($row, @attrs);
        push @out, \%r if %r;
    }
    return undef unless @out;
    return wantarray ? @out : $out[0];
}

sub getAllAttribsWhere {    ## no critic (NamingConventions::Capitalization) -- xCAT's method name
    my ($self, $clause, @attrs) = @_;
    croak 'xCAT::Table double: only the array form of getAllAttribsWhere is supported' unless ref $clause eq 'ARRAY';
    my @conds = map { _parse_cond($_, $self->_cols) } @{$clause};
    croak "Can't call method \"execute\" on an undefined value (empty where clause)" unless @conds;
    my @out;
  ROW: for my $row (@{ _load()->{ $self->{tabname} } || [] }) {
        next if _disabled($row);
        for my $c (@conds) { next ROW unless $c->($row); }
        if (@attrs && $attrs[0] eq 'ALL') {
            push @out, { map { $_ => _nonempty($row->{$_}) } @{ $SCHEMA{ $self->{tabname} }{cols} } };
            next;
        }
        my %r = _pick($row, @attrs);
        push @out, \%r if %r;
    }
    return @out;
}

sub setAttribs {    ## no critic (NamingConventions::Capitalization) -- xCAT's method name
    my ($self, $keys, $values) = @_;
    my %keys   = $keys ? %{$keys} : ();
    my %values = $values ? %{$values} : ();
    my $cols   = $self->_cols;
    my $db     = _load();
    my $rows   = $db->{ $self->{tabname} } ||= [];
    for (keys %keys) { croak "Can't call method \"execute\" on an undefined value (no such column: $_)" unless $cols->{$_}; }

    my @match;
    if (%keys) {
      ROW: for my $row (@{$rows}) {
            for my $k (keys %keys) {
                my $want = ref $keys{$k} ? $keys{$k}[0] : $keys{$k};
                next ROW unless defined $want && defined $row->{$k} && $row->{$k} eq $want;
            }
            push @match, $row;
        }
    }
    if (@match) {
        for (keys %values) { return (undef, 'Error attempting requested DB operation') unless $cols->{$_}; }
        for my $row (@match) {
            for my $c (keys %values) {
                my $v = $values{$c};
                if   (!defined $v || $v eq 'NULL') { delete $row->{$c}; }
                else                               { $row->{$c} = "$v"; }
            }
        }
    } else {
        my %new = (%keys, %values);
        for (keys %new) {
            croak "Can't call method \"execute\" on an undefined value (table $self->{tabname} has no column named $_)"
              unless $cols->{$_};
        }
        for my $p (@{ $SCHEMA{ $self->{tabname} }{keys} }) { $new{$p} = q{} unless defined $new{$p}; }
        return unless grep { defined && $_ ne q{} } values %new;    # truly blank rows are not inserted
        push @{$rows}, { map { $_ => "$new{$_}" } grep { defined $new{$_} } keys %new };
    }
    _save($db);
    return 0;
}

sub delEntries {    ## no critic (NamingConventions::Capitalization) -- xCAT's method name
    my ($self, $keyref) = @_;
    my $db   = _load();
    my $rows = $db->{ $self->{tabname} } ||= [];
    if (!$keyref) {
        @{$rows} = ();
        _save($db);
        return;
    }
    my @sets = ref $keyref eq 'ARRAY' ? @{$keyref} : ($keyref);
    my $cols = $self->_cols;
    for my $set (@sets) {
        croak 'DBD::SQLite: near "WHERE": syntax error (empty key hash)' unless %{$set};
        for (keys %{$set}) { croak "DBD::SQLite: no such column: $_" unless $cols->{$_}; }
    }
    my $matches = sub {
        my ($row) = @_;
      SET: for my $set (@sets) {
            for my $k (keys %{$set}) {
                my $want = ref $set->{$k} ? $set->{$k}[0] : $set->{$k};
                next SET unless defined $want && defined $row->{$k} && $row->{$k} eq $want;
            }
            return 1;
        }
        return 0;
    };
    @{$rows} = grep { !$matches->($_) } @{$rows};
    _save($db);
    return;
}

sub commit { return; }

sub close { return; }    ## no critic (Subroutines::ProhibitBuiltinHomonyms) -- xCAT's method name

# ---------------------------------------------------------------------------------------------

sub _cols {
    my ($self) = @_;
    return { map { $_ => 1 } @{ $SCHEMA{ $self->{tabname} }{cols} } };
}

sub _disabled {
    my ($row) = @_;
    my $d = $row->{disable};
    return 0 unless defined $d;
    return $d =~ /\A(?:0|no)\z/i ? 0 : 1;    # "disable in ('0','no','NO','No','nO')"
}

# The asked columns that hold something ('' and "\n" count as nothing, as /^$/ in the original).
sub _pick {
    my ($row, @attrs) = @_;
    my %r;
    for my $col (@attrs) {
        my $v = $row->{$col};
        next if !defined $v || $v =~ /^$/;    ## no critic (RegularExpressions::RequireExtendedFormatting RegularExpressions::RequireLineBoundaryMatching RegularExpressions::RequireDotMatchAnything) -- the original's exact test
        $r{$col} = $v;
    }
    return %r;
}

sub _nonempty {
    my ($v) = @_;
    return (defined $v && $v !~ /^$/) ? $v : undef;    ## no critic (RegularExpressions::RequireExtendedFormatting RegularExpressions::RequireLineBoundaryMatching RegularExpressions::RequireDotMatchAnything) -- as above
}

# The operator order of xCAT's buildWhereClause; returns a row predicate.
sub _parse_cond {
    my ($m, $cols) = @_;
    my ($attr, $op, $val);
    for my $try (
        [ qr/\A[^=]*==/, '==' ], [ qr/\A[^=]*=~/, '=~' ], [ qr/\A[^=]*!=/, '!=' ], [ qr/[^=]*!~/, '!~' ],
        [ qr/\A[^=]*<=/, '<=' ], [ qr/\A[^=]*</, '<' ], [ qr/\A[^=]*>=/, '>=' ], [ qr/\A[^=]*>/, '>' ],
      )
    {
        my ($re, $o) = @{$try};
        next unless $m =~ $re;
        ($attr, $val) = split /\Q$o\E/, $m, 2;
        $op = $o;
        last;
    }
    croak "Can't call method \"execute\" on an undefined value (unsupported operator: $m)" unless $op;
    croak "DBD::SQLite: no such column: $attr" unless $cols->{$attr};
    croak "DBD::SQLite: syntax error: a ' in the where value $m breaks the SQL xCAT builds" if $val =~ /'/;
    if ($op eq '=~' || $op eq '!~') {
        $val =~ s{\A/}{};
        $val =~ s{/\z}{};
        my $re = _like_regex($val);
        return $op eq '=~'
          ? sub { defined $_[0]{$attr} && $_[0]{$attr} =~ $re }
          : sub { defined $_[0]{$attr} && $_[0]{$attr} !~ $re };
    }
    my %cmp = (
        '==' => sub { $_[0] eq $_[1] }, '!=' => sub { $_[0] ne $_[1] },
        '<'  => sub { $_[0] lt $_[1] }, '<=' => sub { $_[0] le $_[1] },
        '>'  => sub { $_[0] gt $_[1] }, '>=' => sub { $_[0] ge $_[1] },
    );
    my $f = $cmp{$op};
    return sub { defined $_[0]{$attr} && $f->($_[0]{$attr}, $val) };
}

# SQLite LIKE: % any run, _ one character, ASCII letters case-insensitive, whole value.
sub _like_regex {
    my ($pat) = @_;
    my $re = join q{}, map { $_ eq '%' ? '.*' : $_ eq '_' ? q{.} : quotemeta } split //, $pat;
    return qr/\A$re\z/si;
}

sub _file {
    my $f = $ENV{XCAT_TEST_TABLES};
    croak 'xCAT::Table double: XCAT_TEST_TABLES is not set' unless defined $f && length $f;
    return $f;
}

# Table rows as Perl byte strings, as DBD::SQLite gives them.
sub _load {
    my $f = _file();
    return {} unless -e $f;
    open my $fh, '<:raw', $f or croak "xCAT::Table double: cannot read $f: $!";
    my $text = do { local $/ = undef; <$fh> };
    CORE::close $fh or croak "xCAT::Table double: cannot read $f: $!";
    my $db = length $text ? $JSON->decode($text) : {};
    for my $t (keys %{$db}) {
        for my $row (@{ $db->{$t} }) {
            for my $k (keys %{$row}) {
                my $v = $row->{$k};
                if (!defined $v) { delete $row->{$k}; next; }
                $v = "$v";
                utf8::encode($v);
                $row->{$k} = $v;
            }
        }
    }
    return $db;
}

sub _save {
    my ($db) = @_;
    my $f = _file();
    my %copy;
    for my $t (keys %{$db}) {
        $copy{$t} = [
            map {
                my $row = $_;
                +{ map { my $v = $row->{$_}; utf8::decode($v); ($_ => $v) } keys %{$row} }
            } @{ $db->{$t} }
        ];
    }
    my $tmp = "$f.tmp.$$";
    open my $fh, '>:raw', $tmp or croak "xCAT::Table double: cannot write $tmp: $!";
    print {$fh} $JSON->encode(\%copy) or croak "xCAT::Table double: cannot write $tmp: $!";
    CORE::close $fh or croak "xCAT::Table double: cannot write $tmp: $!";
    rename $tmp, $f or croak "xCAT::Table double: cannot rename $tmp to $f: $!";
    return;
}

1;
