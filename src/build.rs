//! Gives the binary the commit it is built from (`--version`), as
//! `SECRET_AGENT_COMMIT`: the value of that variable when the build sets it
//! (a source tarball's packaging), else `git rev-parse`, else "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SECRET_AGENT_COMMIT");
    let commit = match std::env::var("SECRET_AGENT_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => git(&["rev-parse", "--short=12", "HEAD"])
            .unwrap_or_else(|| "unknown: built without git".to_owned()),
    };
    // A new commit or checkout changes HEAD or the branch it points to.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=SECRET_AGENT_COMMIT={commit}");
}
