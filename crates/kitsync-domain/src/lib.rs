//! Pure types and rules of kitsync: no I/O, no async, no database or HTTP types.
//!
//! Layout, in the order data flows through it:
//! - [`signing`]: the Kit request signature (`x-sign`, docs/protocol.md §2), its
//!   canonical JSON form, and the `Body-Sign` response header (§3).
//! - [`time`]: the marketplace's `yyyyMMddHHmmssSSS` UTC+8 timestamps ([`KitTime`]), and
//!   [`time::now_ms`], the wall clock the other crates share (the rules here never read it).
//! - [`parse`]: tolerant parsing and strict validation of the five callback bodies into
//!   [`Command`]s, with errors that name the field at fault ([`FieldError`]).
//! - [`command`]: the validated changes the worker applies; what travels on the queue.
//! - [`decide`]: the version/tombstone rules that make applying order-insensitive, as pure
//!   functions the store calls and the property tests exercise.
//! - [`scope`]: what an API token may do ([`Scope`]).
//! - [`html`]: escaping text for the HTML pages of the login bridge and the emulators.
#![forbid(unsafe_code)]

pub mod command;
pub mod decide;
pub mod error;
pub mod html;
pub mod parse;
pub mod result_code;
pub mod scope;
pub mod signing;
pub mod time;

pub use command::{
    AppChange, AuthChange, AuthOp, AuthUser, CallbackKind, Command, FullOrgSnapshot, Op, OrgChange,
    OrgInfo, QueuedCallback, ReplayKey, ReplayStamp, Role, SecretText, TenantChange,
};
pub use decide::{Decision, Rank};
pub use error::FieldError;
pub use result_code::ResultCode;
pub use scope::Scope;
pub use time::KitTime;
