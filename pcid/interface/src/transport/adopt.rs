//! Adopting the channel fd a process inherited from pcid, named by an
//! environment variable (`PCID_CLIENT_CHANNEL`): the steps every OS shares,
//! written once. The OS transport ([`super::unix`] on Linux, the Redox
//! module on Redox) supplies only what needs its system calls: checking that
//! the number is an open descriptor of the right kind and taking ownership
//! of it, then setting its flags (close-on-exec; non-blocking on Redox).
//!
//! The order is what makes it safe to call with any environment:
//!
//! 1. the variable must be set and hold a decimal descriptor number above 2
//!    (0–2 are standard input, output and error, never a channel) —
//!    [`parse_fd`];
//! 2. only one adoption per process may be under way or done (a second
//!    owner of the same number would close it under the first);
//! 3. the OS check runs before anything owns the number, so a number that
//!    is not open, or not a channel, is refused and left as it was;
//! 4. only once the fd is owned is the variable removed, so that it is
//!    adopted once and not passed on to this process's children.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::AdoptError;

/// Set while an adoption is under way or done; cleared again when one fails
/// before taking ownership.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// The descriptor number `value` (of variable `var`) names, if it can name
/// a channel: a decimal number (surrounding white space allowed) above 2.
pub(super) fn parse_fd(var: &'static str, value: &str) -> Result<i32, AdoptError> {
    match value.trim().parse::<i32>() {
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err(AdoptError::InvalidValue {
            var,
            value: value.to_string(),
        }),
    }
}

/// Adopts the fd named by `var`: parses it ([`parse_fd`]), lets
/// `check_and_own` check it and take ownership (the OS part; it must leave
/// the descriptor untouched when it refuses it), removes `var`, then lets
/// `set_flags` prepare the owned descriptor.
pub(super) fn adopt_from_env(
    var: &'static str,
    check_and_own: impl FnOnce(i32) -> Result<OwnedFd, AdoptError>,
    set_flags: impl FnOnce(&OwnedFd, i32) -> Result<(), AdoptError>,
) -> Result<OwnedFd, AdoptError> {
    adopt_guarded(&ADOPTED, var, check_and_own, set_flags)
}

/// [`adopt_from_env`] with the once-per-process guard `adopted`.
fn adopt_guarded(
    adopted: &AtomicBool,
    var: &'static str,
    check_and_own: impl FnOnce(i32) -> Result<OwnedFd, AdoptError>,
    set_flags: impl FnOnce(&OwnedFd, i32) -> Result<(), AdoptError>,
) -> Result<OwnedFd, AdoptError> {
    let value = std::env::var(var).map_err(|e| match e {
        std::env::VarError::NotPresent => AdoptError::NotSet { var },
        std::env::VarError::NotUnicode(v) => AdoptError::InvalidValue {
            var,
            value: v.to_string_lossy().into_owned(),
        },
    })?;
    let fd = parse_fd(var, &value)?;
    if adopted.swap(true, Ordering::SeqCst) {
        return Err(AdoptError::AlreadyAdopted);
    }
    let owned = check_and_own(fd).inspect_err(|_| adopted.store(false, Ordering::SeqCst))?;
    // Only now that the fd is ours: it must not be adopted a second time.
    std::env::remove_var(var);
    set_flags(&owned, fd)?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAR: &str = "PCID_TEST_ADOPT_PARSE";

    #[test]
    fn only_decimal_numbers_above_stdio_name_a_channel() {
        for (value, want) in [
            ("3", Some(3)),
            (" 17\n", Some(17)),
            ("2147483647", Some(i32::MAX)),
        ] {
            assert_eq!(parse_fd(VAR, value).ok(), want, "{value:?}");
        }
        for bad in [
            "",
            " ",
            "abc",
            "3x",
            "0x10",
            "-1",
            "-3",
            "0",
            "1",
            "2",
            "+",
            "2147483648",
            "1e3",
            "3.0",
        ] {
            match parse_fd(VAR, bad) {
                Err(AdoptError::InvalidValue { var, value }) => {
                    assert_eq!((var, value.as_str()), (VAR, bad));
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refused_fd_is_neither_owned_nor_its_variable_removed() {
        // The OS check refuses: nothing is owned, the variable stays, and a
        // later adoption may still run (the guard was released).
        let var = "PCID_TEST_ADOPT_REFUSED";
        let guard = AtomicBool::new(false);
        std::env::set_var(var, "41");
        let mut seen = None;
        let r = adopt_guarded(
            &guard,
            var,
            |fd| {
                seen = Some(fd);
                Err(AdoptError::NotOpen { var, fd })
            },
            |_, _| unreachable!("flags are set only on an owned fd"),
        );
        assert!(
            matches!(r, Err(AdoptError::NotOpen { fd: 41, .. })),
            "{r:?}"
        );
        assert_eq!(seen, Some(41));
        assert_eq!(std::env::var(var).as_deref(), Ok("41"));
        assert!(!guard.load(Ordering::SeqCst));
        // A bad value never reaches the OS check.
        std::env::set_var(var, "-5");
        let r = adopt_guarded(
            &guard,
            var,
            |_| unreachable!("checked before parsing"),
            |_, _| unreachable!(),
        );
        assert!(matches!(r, Err(AdoptError::InvalidValue { .. })), "{r:?}");
        std::env::remove_var(var);
        let r = adopt_guarded(&guard, var, |_| unreachable!(), |_, _| unreachable!());
        assert!(matches!(r, Err(AdoptError::NotSet { .. })), "{r:?}");
    }

    #[test]
    fn an_fd_is_adopted_once_and_its_variable_removed_after_ownership() {
        let var = "PCID_TEST_ADOPT_ONCE";
        let guard = AtomicBool::new(false);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = OwnedFd::from(a);
        let number = std::os::fd::AsRawFd::as_raw_fd(&fd);
        std::env::set_var(var, number.to_string());
        let mut flags_set = false;
        let owned = adopt_guarded(
            &guard,
            var,
            |n| {
                assert_eq!(n, number);
                // Still set while the OS part runs.
                assert!(std::env::var_os(var).is_some());
                Ok(fd)
            },
            |_, n| {
                assert_eq!(n, number);
                assert!(std::env::var_os(var).is_none(), "removed before flags");
                flags_set = true;
                Ok(())
            },
        )
        .unwrap();
        assert!(flags_set);
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&owned), number);
        // A second adoption is refused even with the variable set again.
        std::env::set_var(var, number.to_string());
        let r = adopt_guarded(&guard, var, |_| unreachable!(), |_, _| unreachable!());
        assert!(matches!(r, Err(AdoptError::AlreadyAdopted)), "{r:?}");
        std::env::remove_var(var);
    }
}
