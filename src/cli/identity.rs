//! Who runs this process: the operating-system account of the real uid, read from the user
//! database (never `$USER`, which anyone can set), and `--as` only for the accounts the
//! config lets act for someone else. On PostgreSQL, the account is the database role the
//! server authenticated (`session_user`): one shared engine, many hosts, and a host's
//! accounts mean nothing to the others.

use crate::config::Config;
use crate::domain::actor::{normalise, Actor};
use color_eyre::eyre::{eyre, Result};

/// The account name of `uid` in the user database, if it has an entry.
fn account_name(uid: libc::uid_t) -> Result<Option<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); getpwuid_r
        // fills it with pointers into `buf`, which lives until we have copied the name.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the length given; `found` is set to null or to
        // `pwd`.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast::<libc::c_char>(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(eyre!(
                "cannot read the user database for uid {uid}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() || pwd.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Ok(Some(name.to_string_lossy().into_owned()));
    }
}

/// The account running this process, normalised. A uid with no entry in the user database
/// (common in containers) is `uid-N`: still derived from the uid, so it cannot be claimed.
pub fn os_account() -> Result<String> {
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    match account_name(uid)? {
        Some(name) => normalise(&name).map_err(|e| {
            eyre!("the account running mailfleet (uid {uid}) cannot be an actor: {e}")
        }),
        None => Ok(format!("uid-{uid}")),
    }
}

/// Who acts: the account, or with `--as NAME` that name via the account when the config
/// lists the account in `[identity] impersonators`.
pub fn actor(cfg: &Config, as_user: Option<&str>) -> Result<Actor> {
    acting(cfg, os_account()?, as_user)
}

/// Who acts on a PostgreSQL database: its authenticated role, or with `--as NAME` that name
/// via the role when the config lists the role in `[identity] impersonators`.
pub fn database_actor(cfg: &Config, role: &str, as_user: Option<&str>) -> Result<Actor> {
    let account =
        normalise(role).map_err(|e| eyre!("the database role {role:?} cannot be an actor: {e}"))?;
    acting(cfg, account, as_user)
}

fn acting(cfg: &Config, account: String, as_user: Option<&str>) -> Result<Actor> {
    let Some(name) = as_user else {
        return Ok(Actor::account(account));
    };
    let wanted = Actor::impersonating(name, account.clone()).map_err(|e| eyre!("--as: {e}"))?;
    if wanted.via.is_some() && !cfg.may_impersonate(&account) {
        return Err(eyre!(
            "--as: the account {account} may not act for {}; list it in [identity] impersonators to allow it",
            wanted.name
        ));
    }
    Ok(wanted)
}
