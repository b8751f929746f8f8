//! The pipeline's intermediate representation: flows, matches, actions and
//! groups, as parsed from `ovs-ofctl` text (see [`super::parse`]) or produced
//! by the Service compiler, and as printed by `dump-flows` (see
//! [`super::format`]).

use super::fields::FieldId;
use crate::key::FlowKey;

/// A match: `value` holds the wanted bits, `mask` which bits matter
/// (`value & !mask == 0` always holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Match {
    /// Wanted bits.
    pub value: FlowKey,
    /// Bits that matter.
    pub mask: FlowKey,
}

impl Match {
    /// The match-everything match.
    pub const ANY: Match = Match {
        value: FlowKey::ZERO,
        mask: FlowKey::ZERO,
    };

    /// Whether `key` satisfies this match.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        let mut diff = 0u64;
        for i in 0..crate::key::KEY_WORDS {
            diff |= (key.w[i] & self.mask.w[i]) ^ self.value.w[i];
        }
        diff == 0
    }
}

/// A bit range of a field: `field[ofs..ofs+n_bits]`, as in `NXM_NX_REG0[0..15]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubField {
    /// The field.
    pub field: FieldId,
    /// First bit (0 = least significant).
    pub ofs: u16,
    /// Number of bits.
    pub n_bits: u16,
}

/// Where a `ct()` action takes its zone from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// `zone=N`.
    Imm(u16),
    /// `zone=NXM_NX_REG4[0..15]`.
    Field(SubField),
}

/// A `ct(...)` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtAction {
    /// `commit`.
    pub commit: bool,
    /// `force` (implies commit).
    pub force: bool,
    /// `table=N`: recirculate a copy into table N after conntrack.
    pub table: Option<u8>,
    /// Zone source.
    pub zone: CtZone,
    /// `nat`, `nat(src=...)`, `nat(dst=...)`.
    pub nat: Option<conntrack::NatSpec>,
    /// `exec(...)`: only `set_field`/`load` to `ct_mark`/`ct_label`.
    pub exec: Vec<Action>,
    /// `alg=ftp|tftp` as written (not implemented by the datapath; kept so
    /// that it prints back).
    pub alg: Option<String>,
}

/// Selection/weighting of one group bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `bucket_id`, when given.
    pub id: Option<u32>,
    /// `weight` (select groups; default 1... OVS default 1).
    pub weight: u16,
    /// `watch_port`, when given.
    pub watch_port: Option<u32>,
    /// The bucket's actions.
    pub actions: Vec<Action>,
}

/// Group types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// Execute every bucket.
    All,
    /// Execute one bucket chosen by hash.
    Select,
    /// Execute the single bucket.
    Indirect,
    /// Fast failover (first live bucket).
    FastFailover,
}

/// An OpenFlow group (`add-group` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `group_id`.
    pub id: u32,
    /// `type`.
    pub kind: GroupType,
    /// `selection_method=hash|dp_hash` as written, if any.
    pub selection_method: Option<String>,
    /// `fields(...)` for `selection_method=hash`: the fields hashed (with an
    /// optional mask each).
    pub fields: Vec<(FieldId, Option<u128>)>,
    /// `selection_method_param`.
    pub selection_param: u64,
    /// Buckets in order.
    pub buckets: Vec<Bucket>,
}

/// One action. Lists of actions run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `output:N`, `LOCAL`, `IN_PORT`, a bare port number. Port numbers use
    /// the OpenFlow 1.0 numbering of [`crate::key`] (`OFPP_LOCAL`...).
    Output {
        /// Port.
        port: u32,
        /// `max_len` for `output(port=..,max_len=..)`; `None` otherwise.
        max_len: Option<u16>,
    },
    /// `output:NXM_NX_REG0[]`: port taken from a field.
    OutputField(SubField),
    /// `controller(...)` / `CONTROLLER:len`: punt, counted.
    Controller {
        /// The text inside the parentheses, as written (normalised).
        args: String,
    },
    /// `resubmit(port,table)`, `resubmit:port`, `resubmit(,table)`.
    Resubmit {
        /// In-port to use during the resubmit (`None` = unchanged).
        port: Option<u32>,
        /// Table (`None` = current table).
        table: Option<u8>,
        /// `resubmit(,T,ct)` variant: match on the conntrack original tuple.
        ct: bool,
    },
    /// `goto_table:N`.
    GotoTable(u8),
    /// `load:V->F[a..b]`.
    Load {
        /// Destination bits.
        dst: SubField,
        /// Value (fits `dst.n_bits`).
        value: u128,
    },
    /// `move:A[..]->B[..]`.
    Move {
        /// Source bits.
        src: SubField,
        /// Destination bits (same width).
        dst: SubField,
    },
    /// `set_field:V[/M]->F`.
    SetField {
        /// Field.
        field: FieldId,
        /// Value (user-visible).
        value: u128,
        /// Mask (all ones unless `/M` was given).
        mask: u128,
    },
    /// `mod_dl_src:MAC`.
    ModDlSrc(u64),
    /// `mod_dl_dst:MAC`.
    ModDlDst(u64),
    /// `mod_nw_src:IP`.
    ModNwSrc(u32),
    /// `mod_nw_dst:IP`.
    ModNwDst(u32),
    /// `mod_nw_tos:TOS`.
    ModNwTos(u8),
    /// `mod_nw_ttl:TTL`.
    ModNwTtl(u8),
    /// `mod_tp_src:PORT`.
    ModTpSrc(u16),
    /// `mod_tp_dst:PORT`.
    ModTpDst(u16),
    /// `dec_ttl`.
    DecTtl,
    /// `ct(...)`.
    Ct(CtAction),
    /// `ct_clear`.
    CtClear,
    /// `group:G`.
    Group(u32),
    /// `conjunction(id,k/n)`.
    Conjunction {
        /// Conjunction id.
        id: u32,
        /// Clause number, 1-based as written.
        clause: u8,
        /// Number of clauses.
        n_clauses: u8,
    },
    /// `note:hex...`: no effect.
    Note(Vec<u8>),
    /// `drop` written explicitly (only alone; an empty list also drops).
    Drop,
    /// `learn(...)`: add or refresh a flow built from the packet's fields
    /// (see [`super::learn`]).
    Learn(Box<LearnAction>),
    /// `fin_timeout(idle_timeout=I,hard_timeout=H)`: a TCP FIN or RST that
    /// hits the flow shortens its timeouts to these (0 = unchanged).
    FinTimeout {
        /// New idle timeout, seconds.
        idle: u16,
        /// New hard timeout, seconds.
        hard: u16,
    },
}

/// Where a `learn` spec takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnSrc {
    /// Bits of the packet's flow at the time of the `learn`.
    Field(SubField),
    /// A constant (fits the destination's width).
    Imm(u128),
}

/// One spec of a `learn` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnSpec {
    /// The learned flow matches `dst` against `src` (`F[]`, `D[]=S[]`,
    /// `F=VALUE`).
    Match {
        /// Match bits of the learned flow.
        dst: SubField,
        /// Their value.
        src: LearnSrc,
    },
    /// The learned flow loads `src` into `dst` (`load:S[]->D[]`,
    /// `load:VALUE->D[]`).
    Load {
        /// Destination bits.
        dst: SubField,
        /// Value.
        src: LearnSrc,
    },
    /// The learned flow outputs to the port in `src` (`output:F[]`).
    Output {
        /// Port bits.
        src: SubField,
    },
}

/// A `learn(...)` action, as ovs-actions(7) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnAction {
    /// `table` of the learned flow (default 1).
    pub table: u8,
    /// `idle_timeout` of the learned flow (0 = none).
    pub idle_timeout: u16,
    /// `hard_timeout` of the learned flow (0 = none).
    pub hard_timeout: u16,
    /// `fin_idle_timeout`: the learned flow gets a `fin_timeout` action.
    pub fin_idle_timeout: u16,
    /// `fin_hard_timeout`.
    pub fin_hard_timeout: u16,
    /// `priority` of the learned flow (default 32768).
    pub priority: u16,
    /// `cookie` of the learned flow.
    pub cookie: u64,
    /// `send_flow_rem` (kept for printing; flowpath has no controller).
    pub send_flow_rem: bool,
    /// `delete_learned`: when the last flow with a `learn` of this
    /// (cookie, table) goes away, every flow of that cookie in that table
    /// goes too.
    pub delete_learned: bool,
    /// `limit`: learn nothing while the table holds this many flows with
    /// the cookie (0 = no limit).
    pub limit: u32,
    /// `result_dst`: one bit set to 1 when the flow was learned, else 0.
    pub result_dst: Option<SubField>,
    /// The specs in order.
    pub specs: Vec<LearnSpec>,
}

/// A flow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// `table`.
    pub table: u8,
    /// `priority` (default 32768).
    pub priority: u16,
    /// `cookie`.
    pub cookie: u64,
    /// `idle_timeout` (0 = none).
    pub idle_timeout: u16,
    /// `hard_timeout` (0 = none).
    pub hard_timeout: u16,
    /// The match.
    pub matches: Match,
    /// The actions.
    pub actions: Vec<Action>,
}

/// Default flow priority, as in OpenFlow.
pub const DEFAULT_PRIORITY: u16 = 32768;

/// Where a flow or group came from, for error messages and `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// File name as given.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
}
