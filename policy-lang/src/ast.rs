//! The syntax tree of a `.pipe` file, as written, with spans.
//!
//! The AST keeps what the formatter needs to print the file back (comments, the order of
//! statements, the text of numbers and names) and nothing is checked yet: names,
//! numbers, CIDRs and ports are validated by [`crate::resolve`]. Two trees that differ
//! only in their spans mean the same file.

use crate::span::Span;

/// A whole `.pipe` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// The top-level items, in source order.
    pub items: Vec<Stmt<Item>>,
    /// Comments after the last item.
    pub end_comments: Vec<String>,
}

/// Comments attached to a statement: whole-line comments before it, and one comment after
/// it on its last line. The text excludes the leading `//` and trailing blanks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comments {
    /// Comments before the statement that a blank line separates from it (a file header,
    /// a section title); printed with a blank line after them.
    pub detached: Vec<String>,
    /// Comments on the lines before the statement.
    pub leading: Vec<String>,
    /// A comment after the statement, on the same line as its end.
    pub trailing: Option<String>,
}

/// A statement with its comments and span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt<T> {
    /// The comments around it.
    pub comments: Comments,
    /// The statement itself.
    pub node: T,
    /// Where it is, from its first keyword to its `;` or `}`.
    pub span: Span,
}

/// A word of the language: a name, a keyword argument, or a literal kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// The text as written (numbers without leading zeros).
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A string literal, with its escapes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Str {
    /// The decoded value.
    pub value: String,
    /// Where it is, quotes included.
    pub span: Span,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `include "other.pipe";`
    Include(Str),
    /// `policy "name" priority N { ... }`
    Policy(Policy),
    /// `target "name" [extends "preset"] { ... }`
    Target(Target),
    /// `placement { ... }`
    Placement(Placement),
}

/// A policy block of the admin tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Its name.
    pub name: Str,
    /// Its priority (text of a number; lower goes first).
    pub priority: Word,
    /// Its statements.
    pub body: Vec<Stmt<PolicyStmt>>,
    /// Comments before the closing brace.
    pub end_comments: Vec<String>,
}

/// A statement of a policy block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStmt {
    /// `subject namespaces { ... };` or `subject pods { ... } [in namespaces { ... }];`
    Subject(Peer),
    /// A rule.
    Rule(Rule),
}

/// The direction of a rule, as written and as resolved ([`crate::resolved::Direction`] is
/// this type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    /// `ingress`: traffic to the subject.
    Ingress,
    /// `egress`: traffic from the subject.
    Egress,
}

/// `ingress|egress ACTION ["name"] [from|to PEERS] [ports PORTS];`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The direction, and the span of its keyword.
    pub direction: (Direction, Span),
    /// The action word (`allow`, `deny`, `pass`, `log`, `redirect-to-proxy`).
    pub action: Word,
    /// The optional name.
    pub name: Option<Str>,
    /// The clauses, in source order.
    pub clauses: Vec<Clause>,
}

/// Which keyword introduced a peer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKeyword {
    /// `from`
    From,
    /// `to`
    To,
}

/// A clause of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clause {
    /// `from PEER, ...` or `to PEER, ...`
    Peers {
        /// `from` or `to`, and its span.
        keyword: (PeerKeyword, Span),
        /// The peers (at least one).
        peers: Vec<Peer>,
        /// The whole clause.
        span: Span,
    },
    /// `ports PORT, ...`
    Ports {
        /// The ports (at least one).
        ports: Vec<PortItem>,
        /// The whole clause.
        span: Span,
    },
}

/// A peer of a rule, or the subject of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `pods { ... } [in namespaces { ... }]`
    Pods {
        /// The pod selector.
        pods: Selector,
        /// The namespace selector, if given.
        namespaces: Option<Selector>,
        /// The whole peer.
        span: Span,
    },
    /// `namespaces { ... }`
    Namespaces {
        /// The namespace selector.
        namespaces: Selector,
        /// The whole peer.
        span: Span,
    },
    /// `cidr 10.0.0.0/8 [except [10.1.0.0/16, ...]]`
    Cidr {
        /// The CIDR as written.
        cidr: Word,
        /// The exceptions as written.
        except: Vec<Word>,
        /// The whole peer.
        span: Span,
    },
    /// `entity world`
    Entity(Word),
    /// `service "namespace/name"`
    Service(Str),
}

impl Peer {
    /// The span of the whole peer.
    pub fn span(&self) -> Span {
        match self {
            Peer::Pods { span, .. } | Peer::Namespaces { span, .. } | Peer::Cidr { span, .. } => {
                *span
            }
            Peer::Entity(w) => w.span,
            Peer::Service(s) => s.span,
        }
    }
}

/// `PROTOCOL [PORT | FROM-TO | NAME]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortItem {
    /// `tcp`, `udp`, `sctp` or `any`.
    pub protocol: Word,
    /// The port, if given (none means every port).
    pub port: Option<PortValue>,
    /// The whole item.
    pub span: Span,
}

/// The port part of a [`PortItem`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortValue {
    /// `80`
    Number(Word),
    /// `8000-8080`
    Range(Word, Word),
    /// `web` (a named container port)
    Named(Word),
}

/// A label selector: `{ key = "v", key in ["a", "b"], key not in [...], key exists, key not exists }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The expressions, ANDed, in source order.
    pub exprs: Vec<SelExpr>,
    /// From `{` to `}`.
    pub span: Span,
}

/// One expression of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelExpr {
    /// The label key (bare or quoted in the source).
    pub key: Word,
    /// The operator and its values.
    pub op: SelOp,
    /// The whole expression.
    pub span: Span,
}

/// The operator of a selector expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelOp {
    /// `= "value"`
    Eq(Str),
    /// `in ["a", ...]`
    In(Vec<Str>),
    /// `not in ["a", ...]`
    NotIn(Vec<Str>),
    /// `exists`
    Exists,
    /// `not exists`
    NotExists,
}

/// A target profile block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its name.
    pub name: Str,
    /// The preset it extends, if any.
    pub extends: Option<Str>,
    /// Its statements.
    pub body: Vec<Stmt<TargetStmt>>,
    /// Comments before the closing brace.
    pub end_comments: Vec<String>,
}

/// A statement of a target block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetStmt {
    /// `match FIELD [MASK], ...;` — adds fields (or changes their mask).
    Match(Vec<FieldSpec>),
    /// `kinds exact, lpm, ...;` — adds match kinds.
    Kinds(Vec<Word>),
    /// `actions allow, drop, ...;` — adds actions.
    Actions(Vec<Word>),
    /// `priority levels N [max M];`
    PriorityLevels {
        /// The number of levels used.
        levels: Limit,
        /// The most the target can have.
        max: Option<Limit>,
    },
    /// `entries N;`
    Entries(Limit),
    /// `counters N;`
    Counters(Limit),
    /// `sa limit N;`
    SaLimit(Limit),
    /// `cost per entry N;`
    CostPerEntry(Word),
    /// `remove match|kinds|actions NAME, ...;`
    Remove {
        /// What list the names are removed from.
        what: RemoveWhat,
        /// The names.
        names: Vec<Word>,
    },
}

/// A field and its mask kind in a `match` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field name (`ipv4.src`).
    pub field: Word,
    /// The mask kind (`exact`, `prefix`, `any`); exact when absent.
    pub mask: Option<Word>,
}

/// The list a `remove` statement takes names from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveWhat {
    /// `remove match`
    Match,
    /// `remove kinds`
    Kinds,
    /// `remove actions`
    Actions,
}

/// A capacity: a number or `unlimited`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The number, or `None` for `unlimited`.
    pub value: Option<Word>,
    /// Where it is.
    pub span: Span,
}

/// A placement block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Its statements.
    pub body: Vec<Stmt<PlacementStmt>>,
    /// Comments before the closing brace.
    pub end_comments: Vec<String>,
}

/// A placement hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementStmt {
    /// `pin SUBJECT on "target";`
    Pin {
        /// What is pinned.
        subject: PlaceSubject,
        /// Where.
        target: Str,
    },
    /// `prefer SUBJECT on "target";`
    Prefer {
        /// What is preferred.
        subject: PlaceSubject,
        /// Where.
        target: Str,
    },
    /// `reserve N RESOURCE on "target" for SUBJECT;`
    Reserve {
        /// How much.
        amount: Word,
        /// `entries`, `counters` or `sas`.
        resource: Word,
        /// On which target.
        target: Str,
        /// For what.
        subject: PlaceSubject,
    },
    /// `exclude SUBJECT from hardware;`
    Exclude {
        /// What is kept in software.
        subject: PlaceSubject,
    },
}

/// The kind of thing a placement hint is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlaceKind {
    /// `policy "name"`
    Policy,
    /// `service "namespace/name"`
    Service,
    /// `table "name"`
    Table,
}

/// `policy "x"`, `service "ns/name"` or `table "t"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceSubject {
    /// The kind.
    pub kind: PlaceKind,
    /// The name.
    pub name: Str,
}
