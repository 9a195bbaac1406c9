//! Which cronwarden instance answers on a socket: its state directory, the
//! directory whose lock it holds. The server sends it with every reply and
//! refuses a request that expects another; a client compares it with its
//! own config's, so two instances configured with one `socket =` path are
//! told apart instead of one answering for the other.
//!
//! A path may hold any byte but a header value may not, so it travels
//! percent-encoded ([`encode`]); both sides compare the encoded forms of
//! canonical paths ([`of_dir`]).

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::Path,
};

/// Every reply's header naming the answering instance's state directory
/// (canonical, encoded).
pub const STATE_DIR_HEADER: &str = "cronwarden-state-dir";
/// Every reply's header naming the answering supervisor's pid.
pub const PID_HEADER: &str = "cronwarden-pid";
/// A request header naming the state directory the client expects
/// (canonical, encoded); any other instance answers 409 without acting.
pub const EXPECT_HEADER: &str = "cronwarden-expect-state-dir";

/// `dir`'s canonical form (symlinks and `..` resolved), encoded; the path
/// as given when it cannot be resolved (it does not exist, or a directory
/// on the way cannot be searched).
pub fn of_dir(dir: &Path) -> String {
    encode(
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .as_os_str(),
    )
}

/// Percent-encodes every byte outside printable ASCII, and `%` itself.
pub fn encode(s: &OsStr) -> String {
    s.as_bytes()
        .iter()
        .map(|b| match b {
            b'!'..=b'~' if *b != b'%' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path [`encode`] encoded; a malformed escape stays as it is.
pub fn decode(s: &str) -> OsString {
    OsString::from_vec(crate::percent::decode_lenient(s))
}

/// [`decode`], for a message.
pub fn decode_lossy(s: &str) -> String {
    decode(s).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any path survives the trip, and its encoded form is a valid
        /// header value (visible ASCII only).
        #[test]
        fn a_path_survives_encoding(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let p = OsString::from_vec(bytes);
            let e = encode(&p);
            prop_assert!(e.bytes().all(|b| (b'!'..=b'~').contains(&b)));
            prop_assert_eq!(decode(&e), p);
        }
    }
}
