//! The gRPC contract is checked like the REST one: `buf lint` holds `proto/` to the
//! rules in `proto/buf.yaml`, and `buf breaking` compares it with the previous
//! release's protos (the release the upgrade test starts from), so a change that would
//! break a deployed client (a field deleted or renumbered, a type changed, a message
//! renamed) fails the suite. A deliberately broken copy shows both checks can fail.
//!
//! The buf CLI is installed by deploy/local/test.sh (pinned, from npm, into the cache
//! outside the clone); it sets `PORTICO_BUF`. No gateway runs here: the contract is the
//! `.proto` files themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The buf version deploy/local/test.sh installs (keep the two in step).
const BUF_VERSION: &str = "1.75.0";

/// The previous release, when `PORTICO_UPGRADE_FROM` does not name one: the same
/// default as deploy/local/test.sh (bump both at each release).
const PREVIOUS_RELEASE: &str = "c18712b";

/// The repository's root (the tests crate lives in `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The buf executable: `PORTICO_BUF` (deploy/local/test.sh sets it), else the npm
/// prefix test.sh installs into, else `buf` on PATH.
fn buf() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTICO_BUF") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("PORTICO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("portico")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portico")));
    if let Some(installed) = cache
        .map(|dir| dir.join("npm/node_modules/.bin/buf"))
        .filter(|path| path.is_file())
    {
        return installed;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("buf"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "the buf CLI is not installed. Run ./deploy/local/test.sh (it installs it into \
             ~/.cache/portico/npm), or: npm install --prefix ~/.cache/portico/npm \
             '@bufbuild/buf@{BUF_VERSION}' && \
             export PORTICO_BUF=~/.cache/portico/npm/node_modules/.bin/buf"
        )
    })
}

/// Runs buf with `args` in `dir`, JSON findings (one per line) on stdout.
fn run_buf(dir: &Path, args: &[&str]) -> Output {
    let binary = buf();
    Command::new(&binary)
        .current_dir(dir)
        .args(args)
        .args(["--error-format", "json"])
        .output()
        .unwrap_or_else(|e| panic!("{} could not run: {e}", binary.display()))
}

/// The rule of each finding buf printed (`"type"` of each JSON line).
fn findings(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|finding| finding["type"].as_str().map(str::to_owned))
        .collect()
}

/// Everything buf said, for a failure message.
fn report(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh scratch directory for one test.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portico-buf-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The previous release's `proto/` tree, extracted from git into `into`; panics with
/// what to do when git or the commit is not there.
fn previous_release_protos(into: &Path) -> PathBuf {
    let release =
        std::env::var("PORTICO_UPGRADE_FROM").unwrap_or_else(|_| PREVIOUS_RELEASE.to_owned());
    let archive = into.join("previous.tar");
    let archived = Command::new("git")
        .current_dir(repo_root())
        .args(["archive", "--format=tar", "-o"])
        .arg(&archive)
        .args([release.as_str(), "proto"])
        .output();
    match archived {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "git could not extract proto/ of the previous release {release}: {}\
             `buf breaking` compares against it, so this check needs a clone with history \
             (not a shallow one or a source tarball); fetch it, or set PORTICO_UPGRADE_FROM \
             to the release to compare with",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "git is not available ({e}): `buf breaking` needs it to extract proto/ of the \
             previous release {release}"
        ),
    }
    let untarred = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar runs");
    assert!(
        untarred.success(),
        "tar could not unpack {}",
        archive.display()
    );
    into.join("proto")
}

/// Copies a directory tree (the protos are a few small files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("a readable directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a copied file");
        }
    }
}

/// `proto/` follows the rules of `proto/buf.yaml` (every exception justified there).
#[test]
fn the_protos_pass_buf_lint() {
    let proto = repo_root().join("proto");
    let lint = run_buf(&proto, &["lint"]);
    assert!(
        lint.status.success(),
        "buf lint found problems in proto/ (fix them, or justify an exception in \
         proto/buf.yaml):\n{}",
        report(&lint)
    );
}

/// Nothing a client of the previous release relies on has changed (FILE category).
#[test]
fn the_protos_have_no_breaking_change_since_the_previous_release() {
    let dir = scratch("breaking");
    let previous = previous_release_protos(&dir);
    let proto = repo_root().join("proto");
    let breaking = run_buf(
        &proto,
        &["breaking", "--against", &previous.to_string_lossy()],
    );
    assert!(
        breaking.status.success(),
        "buf breaking: proto/ breaks clients of the previous release (add a new field or \
         message instead; never delete, renumber or retype one):\n{}",
        report(&breaking)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checks can fail: a copy with a shipped field deleted fails `buf breaking`
/// (FIELD_NO_DELETE), and one with a badly named message and field fails `buf lint`.
#[test]
fn a_broken_copy_fails_both_checks() {
    let dir = scratch("broken");
    let previous = previous_release_protos(&dir);
    let broken = dir.join("broken");
    copy_tree(&repo_root().join("proto"), &broken);

    let webhooks = broken.join("portico/v1/webhooks.proto");
    let text = std::fs::read_to_string(&webhooks).expect("webhooks.proto");
    let shipped_field = "\n  string url = 2;\n";
    assert!(
        text.contains(shipped_field),
        "the premise changed: Webhook.url (field 2) is no longer in webhooks.proto"
    );
    std::fs::write(&webhooks, text.replacen(shipped_field, "\n", 1)).expect("written");
    let breaking = run_buf(
        &broken,
        &["breaking", "--against", &previous.to_string_lossy()],
    );
    assert!(
        !breaking.status.success(),
        "buf breaking accepted a deleted field:\n{}",
        report(&breaking)
    );
    assert!(
        findings(&breaking)
            .iter()
            .any(|rule| rule == "FIELD_NO_DELETE"),
        "buf breaking did not name the deleted field:\n{}",
        report(&breaking)
    );

    let common = broken.join("portico/v1/common.proto");
    let mut text = std::fs::read_to_string(&common).expect("common.proto");
    text.push_str("\nmessage bad_name {\n  string BadField = 1;\n}\n");
    std::fs::write(&common, text).expect("written");
    let lint = run_buf(&broken, &["lint"]);
    assert!(
        !lint.status.success(),
        "buf lint accepted a badly named message:\n{}",
        report(&lint)
    );
    let rules = findings(&lint);
    for rule in ["MESSAGE_PASCAL_CASE", "FIELD_LOWER_SNAKE_CASE"] {
        assert!(
            rules.iter().any(|found| found == rule),
            "buf lint did not report {rule}:\n{}",
            report(&lint)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
