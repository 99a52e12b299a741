//! `regfs commit` and `regfs discard`: push what is staged under a path
//! (or a plain folder with `--to`), and drop it.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::args::{CommitArgs, DiscardArgs};
use super::records::Record;
use crate::cache::{now_secs, Cache};
use crate::oci::format_rfc3339;
use crate::reference::{parse_target, Source};
use crate::registry::{self, layout::Layout, Backend, Client};
use crate::stage::jobs::{self, Change, TagJob};
use crate::stage::plan::{self, AnnotationFile, Input, Plan, Settings};
use crate::stage::push::{push, Event, IoResolver, Outcome};
use crate::stage::scan::scan;
use crate::stage::{Staging, State};

/// Registry options, from a mount record or from the command line.
struct Conn {
    plain_http: Option<bool>,
    https: bool,
    insecure: bool,
    ca_file: Option<PathBuf>,
    timeout: u64,
}

fn backend(
    source: &Source,
    c: &Conn,
    create_layout: bool,
) -> anyhow::Result<(Backend, Option<String>)> {
    let backend = match source {
        Source::Registry { host, .. } => {
            let mut cfg = registry::Config::with_flags(
                host,
                c.plain_http,
                c.https,
                c.insecure,
                c.ca_file.clone(),
            )?;
            cfg.timeout = Duration::from_secs(c.timeout.max(1));
            Backend::Registry(Client::new(cfg)?)
        }
        Source::Layout(p) if create_layout => Backend::Layout(Layout::create(p)?),
        Source::Layout(p) => Backend::Layout(Layout::open(p)?),
    };
    Ok((backend, source.prefix()))
}

fn settings(args: &CommitArgs) -> anyhow::Result<Settings> {
    let annotations: AnnotationFile = match &args.annotation_file {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not an annotation file (a JSON object of objects: \"$manifest\", \"$config\", titles)",
                    p.display()
                )
            })?
        }
        None => AnnotationFile::new(),
    };
    Ok(Settings {
        created: format_rfc3339(now_secs()),
        artifact_type: args.artifact_type.clone(),
        annotations,
        no_chunk_lists: args.no_chunk_lists,
    })
}

pub fn run(args: CommitArgs) -> anyhow::Result<()> {
    for t in &args.tags {
        if !crate::reference::is_tag(t) {
            bail!("--tag {t:?} is not a valid tag");
        }
    }
    let rt = super::runtime(2)?;
    if let Some(target) = &args.to {
        let [path] = args.paths.as_slice() else {
            bail!("--to takes exactly one folder");
        };
        return rt.block_on(commit_plain(&args, path, target));
    }
    for path in &args.paths {
        rt.block_on(commit_in_mount(&args, path))?;
    }
    Ok(())
}

async fn commit_in_mount(args: &CommitArgs, path: &Path) -> anyhow::Result<()> {
    let (rec, parts) = Record::find(path)?;
    if rec.read_only {
        bail!(
            "{} is mounted --read-only: nothing can be staged there",
            rec.mountpoint.display()
        );
    }
    let source: Source = rec.source.parse()?;
    let conn = Conn {
        plain_http: rec.plain_http.then_some(true),
        https: rec.https,
        insecure: rec.insecure,
        ca_file: rec.ca_file.clone(),
        timeout: rec.timeout,
    };
    let (backend, prefix) = backend(&source, &conn, false)?;
    let backend = Arc::new(backend);
    let staging = Staging::open(&rec.staging_root)?;
    let cache = Cache::open(&rec.cache_dir, u64::MAX).ok().map(Arc::new);
    let rel = parts.join("/");
    let jobs = find_tags(&staging, prefix.as_deref(), &rel);
    if jobs.is_empty() {
        println!("Nothing staged under {}", path.display());
        return Ok(());
    }
    let refresh = || rec.refresh_daemon();
    let run = Run {
        args,
        backend,
        cache,
        settings: settings(args)?,
        refresh: &refresh,
    };
    let state = staging.state();
    let mut failed = Vec::new();
    for job in &jobs {
        if let Err(e) = commit_tag(&run, &staging, &state, job).await {
            if jobs.len() > 1 {
                eprintln!("regfs: {e:#}");
            }
            failed.push(e);
        }
    }
    rec.refresh_daemon();
    match (failed.pop(), jobs.len()) {
        (None, _) => Ok(()),
        (Some(e), 1) => Err(e),
        (Some(_), n) => bail!(
            "{} of {n} tag folders not committed (see above)",
            failed.len() + 1
        ),
    }
}

/// What a tag folder that was not committed ends with, in one line: which
/// tag, that no tag moved (tags go last: only a second tag can fail after
/// the first moved), whether its staged changes are kept, and why.
fn not_committed(
    what: &str,
    moved: &[String],
    staged: bool,
    cause: &anyhow::Error,
) -> anyhow::Error {
    let moved = match moved {
        [] => "no tag moved".to_string(),
        m => format!("only {} moved", m.join(", ")),
    };
    let kept = if staged { ", staged changes kept" } else { "" };
    anyhow!("{what} not committed ({moved}{kept}): {cause:#}")
}

/// The tag folders staged at or below `rel` (or the one `rel` is inside);
/// says which folders it leaves alone.
pub(super) fn find_tags(staging: &Staging, prefix: Option<&str>, rel: &str) -> Vec<TagJob> {
    let found = jobs::find_tags(staging, &staging.state(), prefix, rel);
    for s in &found.skipped {
        eprintln!("regfs: {s}: not a tag folder inside a repository; skipped");
    }
    found.jobs
}

/// What one commit run shares between its tags.
struct Run<'a> {
    args: &'a CommitArgs,
    backend: Arc<Backend>,
    cache: Option<Arc<Cache>>,
    settings: Settings,
    /// Tells the mount daemon to show the registry's new state.
    refresh: &'a (dyn Fn() + Sync),
}

/// Removes a folder when dropped (directory layers built for one commit).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn commit_tag(
    run: &Run<'_>,
    staging: &Staging,
    state: &State,
    job: &TagJob,
) -> anyhow::Result<()> {
    let what = run.backend.describe(&job.repo, &job.tag);
    let fail = |moved: &[String], cause: anyhow::Error| not_committed(&what, moved, true, &cause);
    let change = Change::read(staging, state, &job.rel, !run.args.no_chunk_lists)
        .map_err(|e| fail(&[], e.into()))?;
    let tmp = TempDir(
        staging
            .root()
            .join(crate::stage::META_DIR)
            .join(format!("tmp-{}", std::process::id())),
    );
    let plan = build_plan(run, &job.repo, tmp.0.clone(), change)
        .await
        .map_err(|e| fail(&[], e))?;
    let reference = format!("{}/{}:{}", run.backend.host(), job.repo, job.tag);
    if run.args.dry_run || run.args.output.is_some() {
        return write_output(run.args, &reference, &plan);
    }
    let mut tags = vec![job.tag.clone()];
    tags.extend(run.args.tags.iter().cloned());
    let origins: Vec<String> = match &run.cache {
        Some(c) => plan
            .blobs
            .iter()
            .filter_map(|b| c.origin(run.backend.host(), &b.digest))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    let pushed = push_with_output(&run.backend, &job.repo, &plan, &tags, &origins).await;
    // Whatever moved, a later mount must ask the registry for these tags
    // (mounts trust what the cache saved for --tag-ttl).
    if let Some(c) = &run.cache {
        c.forget_tags(run.backend.host(), &job.repo, &tags);
    }
    let outcome = pushed.map_err(|f| fail(&f.moved, f.cause))?;
    // What was just pushed from here reads back without a download.
    if let (Some(c), false) = (&run.cache, outcome.unchanged) {
        for b in &plan.blobs {
            if let plan::Source::File(p) = &b.source {
                if let Err(e) = c.insert_file(p, &b.digest) {
                    tracing::debug!("{e}");
                }
            }
        }
    }
    // The daemon learns the new tag before the staged copy goes, so no
    // moment shows neither.
    (run.refresh)();
    staging
        .discard(&job.rel)
        .with_context(|| format!("pushed, but cannot clear the staged copy of {}", job.rel))?;
    print_outcome(&run.backend, &job.repo, &job.tag, &outcome);
    Ok(())
}

/// The last lines of a commit: `Pushed` (as ORAS), or `Unchanged` when
/// every tag already pointed at the result; then `Digest:`.
fn print_outcome(backend: &Backend, repo: &str, tag: &str, outcome: &Outcome) {
    let verb = if outcome.unchanged {
        "Unchanged"
    } else {
        "Pushed"
    };
    println!("{verb} {}", backend.describe(repo, tag));
    println!("Digest: {}", outcome.digest);
}

async fn build_plan(
    run: &Run<'_>,
    repo: &str,
    tmp: PathBuf,
    change: Change,
) -> anyhow::Result<Plan> {
    let mut resolver = IoResolver {
        backend: run.backend.clone(),
        repo: repo.to_string(),
        cache: run.cache.clone(),
        tmp,
        rt: tokio::runtime::Handle::current(),
    };
    let settings = run.settings.clone();
    tokio::task::spawn_blocking(move || {
        let base = match &change.base {
            Some(d) => Some(plan::Resolver::manifest(&mut resolver, d)?),
            None => None,
        };
        let input = Input {
            dir: &change.dir,
            base,
            removed: change.removed,
            xattrs: change.xattrs,
        };
        plan::plan(&input, &settings, &mut resolver)
    })
    .await
    .map_err(|e| anyhow!("planning failed: {e}"))?
    .map_err(|e| anyhow!("{e}"))
}

fn write_output(args: &CommitArgs, reference: &str, plan: &Plan) -> anyhow::Result<()> {
    let listed = |list: &[plan::Manifest]| -> Vec<serde_json::Value> {
        list.iter()
            .filter(|m| !m.existing)
            .map(|m| {
                serde_json::json!({
                    "path": m.path,
                    "digest": m.digest.to_string(),
                    "mediaType": m.media_type,
                    "manifest": serde_json::from_slice::<serde_json::Value>(&m.bytes).unwrap_or_default(),
                })
            })
            .collect()
    };
    let manifests = listed(&plan.manifests);
    let referrers = listed(&plan.referrers);
    let blobs: Vec<serde_json::Value> = plan
        .blobs
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "digest": b.digest.to_string(),
                "size": b.size,
                "source": match &b.source {
                    plan::Source::File(p) => format!("file:{}", p.display()),
                    plan::Source::Bytes(_) => "generated".to_string(),
                    plan::Source::Registry => "registry".to_string(),
                },
            })
        })
        .collect();
    let top = plan.top().ok_or_else(|| anyhow!("nothing to push"))?;
    let doc = serde_json::json!({
        "reference": reference,
        "digest": top.digest.to_string(),
        "mediaType": top.media_type,
        "manifests": manifests,
        "referrers": referrers,
        "blobs": blobs,
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    match args.output.as_deref() {
        Some(p) if p != Path::new("-") => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
        }
        _ => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// A push that failed, and the tags it had moved before.
struct PushFailed {
    moved: Vec<String>,
    cause: anyhow::Error,
}

async fn push_with_output(
    backend: &Backend,
    repo: &str,
    plan: &Plan,
    tags: &[String],
    origins: &[String],
) -> Result<Outcome, PushFailed> {
    let bars = std::io::stderr().is_terminal();
    let moved = Mutex::new(Vec::new());
    let on = |e: Event<'_>| match e {
        Event::Exists(b) => println!("Exists    {}", b.name),
        Event::Mounted(b, from) => println!("Mounted   {} from {from}", b.name),
        Event::Uploading(b, sent) => {
            if bars && b.size > 1 << 20 {
                let bar = indicatif::ProgressBar::new(b.size);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:30!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(b.name.clone());
                let size = b.size;
                std::thread::spawn(move || loop {
                    let n = sent.load(Ordering::Relaxed);
                    bar.set_position(n);
                    if n >= size || Arc::strong_count(&sent) == 1 {
                        bar.finish_and_clear();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                });
            }
        }
        Event::Uploaded(b) => println!("Uploaded  {} ({} bytes)", b.name, b.size),
        Event::ManifestExists(m) => println!("Exists    {} {}", m.media_type, m.digest),
        Event::ManifestPushed(m) => println!("Uploaded  {} {}", m.media_type, m.digest),
        Event::Attached(m, subject) => println!("Attached  {} to {subject}", m.digest),
        Event::Tagged(t, _) => {
            println!("Tagged    {t}");
            moved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(t.to_string());
        }
    };
    push(backend, repo, plan, tags, origins, &on)
        .await
        .map_err(|e| PushFailed {
            moved: moved.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            cause: e.into(),
        })
}

/// `commit DIR --to REF`: a plain folder laid out like a tag folder.
async fn commit_plain(args: &CommitArgs, path: &Path, target: &str) -> anyhow::Result<()> {
    let (source, repo, tag) = parse_target(target)?;
    let conn = Conn {
        plain_http: args.plain_http,
        https: args.https,
        insecure: args.insecure,
        ca_file: args.ca_file.clone(),
        timeout: args.timeout,
    };
    let (backend, _) = backend(&source, &conn, true)?;
    let backend = Arc::new(backend);
    if !path.is_dir() {
        bail!("{} is not a folder", path.display());
    }
    let dir = scan(path, !args.no_chunk_lists)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if dir.is_empty() {
        bail!("{} is empty: nothing to commit", path.display());
    }
    let run = Run {
        args,
        backend,
        cache: None,
        settings: settings(args)?,
        refresh: &|| {},
    };
    let tmp = TempDir(std::env::temp_dir().join(format!("regfs-commit-{}", std::process::id())));
    let change = Change {
        dir,
        ..Change::default()
    };
    let what = run.backend.describe(&repo, &tag);
    let plan = build_plan(&run, &repo, tmp.0.clone(), change)
        .await
        .map_err(|e| not_committed(&what, &[], false, &e))?;
    let reference = format!("{}/{repo}:{tag}", run.backend.host());
    if args.dry_run || args.output.is_some() {
        return write_output(args, &reference, &plan);
    }
    let mut tags = vec![tag.clone()];
    tags.extend(args.tags.iter().cloned());
    let outcome = push_with_output(&run.backend, &repo, &plan, &tags, &[])
        .await
        .map_err(|f| not_committed(&what, &f.moved, false, &f.cause))?;
    print_outcome(&run.backend, &repo, &tag, &outcome);
    Ok(())
}

pub fn discard(args: DiscardArgs) -> anyhow::Result<()> {
    let (rec, parts) = Record::find(&args.path)?;
    let staging = Staging::open(&rec.staging_root)?;
    let rel = parts.join("/");
    if !staging.has_changes_below(&rel)
        && !staging
            .state()
            .bases
            .keys()
            .any(|k| k == &rel || k.starts_with(&format!("{rel}/")))
    {
        println!("Nothing staged under {}", args.path.display());
        return Ok(());
    }
    staging.discard(&rel)?;
    rec.refresh_daemon();
    println!("Discarded staged changes under {}", args.path.display());
    Ok(())
}
