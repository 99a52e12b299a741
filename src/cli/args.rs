//! The command line: one clap definition, from which help, man pages and
//! `-o` option parsing all come.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueHint};

#[derive(Debug, Parser)]
#[command(
    name = "regfs",
    version,
    about = "Mount an OCI registry or an OCI image layout as a filesystem",
    long_about = "regfs mounts an OCI registry (or an OCI image layout directory) as a directory \
tree: repo/tag/manifest.json, config.json, blobs/sha256/<hex>, and the files an ORAS artifact \
names by its org.opencontainers.image.title annotation. Reads are lazy, cached on disk and \
verified against their sha256 digest before any byte is returned."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a registry or OCI layout; returns once the mount is live.
    Mount(MountArgs),
    /// Unmount a regfs mount (fusermount3 -u works too).
    Umount(UmountArgs),
    /// Push what is staged under PATH as manifests, indexes and tags.
    Commit(CommitArgs),
    /// Drop what is staged under PATH.
    Discard(DiscardArgs),
    /// Show staged changes, cache use, and blobs being fetched with bytes so far.
    Status(StatusArgs),
    /// Hash every cached blob and manifest again; report (or with --repair drop) what does not match.
    ///
    /// Hash every blob and manifest in the cache again, as fsck does for a
    /// disk, and report each one whose bytes do not match its digest. A
    /// mount hashes a cached blob again only when its file changed since it
    /// was verified (size, mtime, ctime, inode); this also finds damage that
    /// left the file's identity alone, such as bit rot. Exits 1 when damaged
    /// files were found and not repaired.
    Verify(VerifyArgs),
    /// Write the man pages to a folder (used to build man/).
    #[command(hide = true)]
    GenerateMan {
        /// Folder to write regfs.1 and regfs-<command>.1 into.
        dir: PathBuf,
    },
    /// Write bash, zsh and fish completions to a folder (used to build completions/).
    #[command(hide = true)]
    GenerateCompletions {
        /// Folder to write regfs.bash, _regfs and regfs.fish into.
        dir: PathBuf,
    },
}

impl Command {
    /// Whether the command may die of SIGPIPE, as `regfs status | head`
    /// should end quietly. Not a command that talks to a registry: there
    /// SIGPIPE comes from a connection the registry closed, and it must be
    /// an error (EPIPE) the command reports, not a silent death.
    pub fn may_die_of_sigpipe(&self) -> bool {
        match self {
            Command::Umount(_)
            | Command::Discard(_)
            | Command::Status(_)
            | Command::Verify(_)
            | Command::GenerateMan { .. }
            | Command::GenerateCompletions { .. } => true,
            Command::Mount(_) | Command::Commit(_) => false,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// HOST[:PORT][/REPO-PREFIX] (e.g. localhost:5000, ghcr.io/oras-project), or oci:PATH.
    pub source: String,
    /// An existing, empty folder to mount on.
    #[arg(value_hint = ValueHint::DirPath)]
    pub mountpoint: PathBuf,

    /// Talk plain HTTP to the registry; =false: HTTPS, as --https. Without
    /// it, --https, --ca-file or --insecure, a loopback registry is tried
    /// over HTTPS first and over plain HTTP when its port does not speak TLS.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub plain_http: Option<bool>,
    /// Talk HTTPS, also to a loopback registry (as --plain-http=false).
    #[arg(long)]
    pub https: bool,
    /// Talk HTTPS without verifying the registry's certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Talk HTTPS, trusting the CA certificates in this PEM file as well.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Cache folder [default: $XDG_CACHE_HOME/regfs, else ~/.cache/regfs].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub cache_dir: Option<PathBuf>,
    /// Where staged changes live [default: CACHE_DIR/staging].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub staging_dir: Option<PathBuf>,
    /// Most bytes of blobs to keep in the cache (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Memory for parsed manifests (K, M, G suffixes); the least recently
    /// used are dropped past it and parsed again from the disk cache.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub metadata_cache: u64,
    /// Show this repository even where the registry has no catalog (repeatable).
    #[arg(long = "repo", value_name = "NAME")]
    pub repos: Vec<String>,
    /// Seconds a tag's resolution (and a listing) is trusted before it is checked again.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub tag_ttl: u64,
    /// strict: no byte of a blob before all of it matched its digest; lazy:
    /// large blobs read by Range on demand, the end-of-file read waits for the check.
    #[arg(long, value_enum, default_value = "strict")]
    pub verify: crate::fs::Verify,
    /// Ranged requests that may fetch one blob at once: 1 = always one
    /// streaming GET; N = up to N concurrent 4 MiB ranges from the start.
    /// Default: one stream, and up to 8 ranges when it delivers less than
    /// 200 MB/s (a distant or congested registry).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel_ranges: Option<u16>,
    /// Microseconds one FUSE thread keeps asking for the next request
    /// after one it answered at once (from memory), before it sleeps (a
    /// warm walk or grep then waits for no thread wake-up); not while
    /// requests or fetches are at work; 0: always sleep.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub request_spin: u64,
    /// Let other users see the mount (FUSE allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Refuse every write with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Stay in the foreground, logging to stderr.
    #[arg(short, long)]
    pub foreground: bool,
    /// Seconds before a registry request (or a silent transfer) is given up.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Where the background daemon logs [default: CACHE_DIR/regfs.log].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Read manifests and blobs through this registry mirror or pull-through
    /// cache, HOST[:PORT][/NAMESPACE], before the mirrors of registries.conf
    /// and the registry itself (repeatable; spoken to like the registry).
    #[arg(long = "mirror", value_name = "HOST", value_parser = parse_mirror)]
    pub mirrors: Vec<String>,
    /// The registries.conf to read mirrors from (also from
    /// CONTAINERS_REGISTRIES_CONF, as podman) instead of
    /// ~/.config/containers/registries.conf or /etc/containers/registries.conf;
    /// the registries.conf.d drop-ins are read too.
    #[arg(long, value_name = "FILE", env = "CONTAINERS_REGISTRIES_CONF", value_hint = ValueHint::FilePath)]
    pub registries_conf: Option<PathBuf>,
    /// Options as mount(8) and fstab pass them: -o plain-http,cache-size=2G,repo=a/b.
    #[arg(short = 'o', value_name = "OPTS", value_delimiter = ',')]
    pub options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mountpoint.
    #[arg(value_hint = ValueHint::DirPath)]
    pub mountpoint: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A path inside a mount: show only what is staged below it.
    pub path: Option<PathBuf>,
    /// Cache folder to report on when no mount is given [default: $XDG_CACHE_HOME/regfs].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Drop what does not match (a mount fetches it again when it is read).
    #[arg(long)]
    pub repair: bool,
    /// Cache folder [default: $XDG_CACHE_HOME/regfs, else ~/.cache/regfs].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Folders inside a regfs mount (a tag, a repository, or the whole
    /// mount), or with --to one plain folder laid out like a tag folder.
    #[arg(required = true, value_name = "PATH", value_hint = ValueHint::DirPath)]
    pub paths: Vec<PathBuf>,
    /// Print the JSON that would be pushed; push nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the JSON that would be pushed to FILE (- for stdout); push nothing.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Commit a plain local folder to HOST[:PORT]/REPO:TAG or oci:PATH:TAG, without a mount.
    #[arg(long, value_name = "REF")]
    pub to: Option<String>,
    /// ORAS annotation file: {"$manifest": {...}, "$config": {...}, "<title>": {...}}.
    #[arg(long, value_name = "FILE")]
    pub annotation_file: Option<PathBuf>,
    /// artifactType of new manifests [default: application/vnd.unknown.artifact.v1].
    #[arg(long, value_name = "TYPE")]
    pub artifact_type: Option<String>,
    /// Also point these tags at what is pushed (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Do not add chunk-digest lists to the manifests regfs builds (they
    /// let lazy reads verify each 4 MiB chunk; see docs/verification.md)
    #[arg(long)]
    pub no_chunk_lists: bool,
    /// With --to: talk plain HTTP; =false: HTTPS, as --https (as for mount:
    /// a loopback registry is otherwise tried over HTTPS first).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub plain_http: Option<bool>,
    /// With --to: talk HTTPS, also to a loopback registry.
    #[arg(long)]
    pub https: bool,
    /// With --to: talk HTTPS without verifying the registry's certificate.
    #[arg(long)]
    pub insecure: bool,
    /// With --to: talk HTTPS, trusting the CA certificates in this PEM file as well.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With --to: seconds before a registry request is given up.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// A path inside a mount: a tag, a file, a repository, or the mount.
    pub path: PathBuf,
}

/// Parses `10G`, `512M`, `1.5G`, `4096` into bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown size unit (use K, M, G or T)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 10G, 512M)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_mirror(s: &str) -> Result<String, String> {
    crate::registry::mirrors::conf::parse_flag(s)
}

/// Options that mount(8) passes and that mean nothing to regfs.
const IGNORED_OPTIONS: &[&str] = &[
    "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto", "user", "nouser",
    "users", "_netdev", "defaults", "nofail", "atime", "noatime", "relatime",
];

impl MountArgs {
    /// Folds `-o` options into the flags they name.
    pub fn apply_options(&mut self) -> Result<(), String> {
        for opt in std::mem::take(&mut self.options) {
            let opt = opt.trim();
            if opt.is_empty() || IGNORED_OPTIONS.contains(&opt) || opt.starts_with("x-") {
                continue;
            }
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k.replace('_', "-"), Some(v.to_string())),
                None => (opt.replace('_', "-"), None),
            };
            let need =
                |v: Option<String>| v.ok_or_else(|| format!("-o {key} needs a value ({key}=...)"));
            let num = |v: Option<String>| -> Result<u64, String> {
                need(v)?
                    .parse()
                    .map_err(|_| format!("-o {key}: not a number"))
            };
            match key.as_str() {
                "plain-http" => {
                    self.plain_http = Some(match value.as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(v) => {
                            return Err(format!("-o plain-http={v}: expected true or false"))
                        }
                    })
                }
                "https" => self.https = true,
                "insecure" => self.insecure = true,
                "parallel-ranges" => {
                    self.parallel_ranges = Some(match value.as_deref() {
                        None => 8,
                        Some(v) => match v.parse::<u16>() {
                            Ok(n) if (1..=64).contains(&n) => n,
                            _ => return Err(format!("-o parallel-ranges={v}: expected 1 to 64")),
                        },
                    })
                }
                "allow-other" => self.allow_other = true,
                "ro" | "read-only" => self.read_only = true,
                "foreground" => self.foreground = true,
                "ca-file" => self.ca_file = Some(need(value)?.into()),
                "cache-dir" => self.cache_dir = Some(need(value)?.into()),
                "staging-dir" => self.staging_dir = Some(need(value)?.into()),
                "log-file" => self.log_file = Some(need(value)?.into()),
                "cache-size" => self.cache_size = parse_size(&need(value)?)?,
                "metadata-cache" => self.metadata_cache = parse_size(&need(value)?)?,
                "repo" => self.repos.push(need(value)?),
                "mirror" => self.mirrors.push(parse_mirror(&need(value)?)?),
                "registries-conf" => self.registries_conf = Some(need(value)?.into()),
                "tag-ttl" => self.tag_ttl = num(value)?,
                "request-spin" => self.request_spin = num(value)?,
                "verify" => {
                    self.verify = match need(value)?.as_str() {
                        "strict" => crate::fs::Verify::Strict,
                        "lazy" => crate::fs::Verify::Lazy,
                        v => return Err(format!("-o verify={v}: expected strict or lazy")),
                    }
                }
                "timeout" => self.timeout = num(value)?,
                _ => return Err(format!("unknown mount option {opt:?}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table = [
            ("10G", Ok(10u64 << 30)),
            ("512M", Ok(512 << 20)),
            ("1.5G", Ok(3 << 29)),
            ("4096", Ok(4096)),
            ("2GiB", Ok(2 << 30)),
            ("1x", Err(())),
            ("G", Err(())),
        ];
        for (s, want) in table {
            assert_eq!(parse_size(s).map_err(|_| ()), want, "{s}");
        }
    }

    #[test]
    fn mount_options() {
        let mut cli = Cli::try_parse_from([
            "regfs",
            "mount",
            "localhost:5000",
            "/mnt",
            "-o",
            "plain-http,cache_size=1G,repo=a/b,ro,_netdev",
            "-o",
            "tag-ttl=5,mirror=cache.lan:5000,registries_conf=/etc/r.conf,request-spin=0",
            "--mirror",
            "hub.lan/ns/",
        ])
        .unwrap();
        let Command::Mount(m) = &mut cli.command else {
            panic!("not mount")
        };
        m.apply_options().unwrap();
        assert!(m.plain_http == Some(true) && m.read_only);
        assert_eq!(m.cache_size, 1 << 30);
        assert_eq!(m.repos, vec!["a/b".to_string()]);
        assert_eq!(m.tag_ttl, 5);
        assert_eq!(m.request_spin, 0);
        assert_eq!(m.mirrors, ["hub.lan/ns", "cache.lan:5000"]);
        assert_eq!(m.registries_conf, Some(PathBuf::from("/etc/r.conf")));
        m.options = vec!["mirror=https://x".into()];
        assert!(m.apply_options().unwrap_err().contains("without http"));
        m.options = vec!["bogus".into()];
        assert!(m.apply_options().unwrap_err().contains("bogus"));
        m.options = vec!["tag-ttl".into()];
        assert!(m.apply_options().is_err());
    }

    #[test]
    fn scheme_flags_and_options() {
        let mount = |args: &[&str]| {
            let mut all = vec!["regfs", "mount", "localhost:5000", "/mnt"];
            all.extend_from_slice(args);
            let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
            let Command::Mount(mut m) = cli.command else {
                panic!("not mount")
            };
            m.apply_options()?;
            Ok::<_, String>((m.plain_http, m.https, m.insecure, m.ca_file))
        };
        assert_eq!(mount(&[]).unwrap(), (None, false, false, None));
        assert_eq!(mount(&["--plain-http"]).unwrap().0, Some(true));
        assert_eq!(mount(&["--plain-http=true"]).unwrap().0, Some(true));
        assert_eq!(mount(&["--plain-http=false"]).unwrap().0, Some(false));
        assert!(mount(&["--plain-http=maybe"]).is_err());
        assert!(mount(&["--https"]).unwrap().1);
        assert_eq!(mount(&["-o", "plain-http"]).unwrap().0, Some(true));
        assert_eq!(mount(&["-o", "plain-http=false"]).unwrap().0, Some(false));
        assert!(mount(&["-o", "plain-http=no"]).is_err());
        assert!(mount(&["-o", "https"]).unwrap().1);
        let (_, _, insecure, ca) = mount(&["-o", "insecure,ca-file=/etc/ca.pem"]).unwrap();
        assert!(insecure);
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
        // `--plain-http` takes its value only after `=`: the source is not eaten.
        let cli = Cli::try_parse_from(["regfs", "mount", "--plain-http", "localhost:5000", "/mnt"])
            .unwrap();
        let Command::Mount(m) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(
            (m.plain_http, m.source.as_str()),
            (Some(true), "localhost:5000")
        );
        let cli = Cli::try_parse_from([
            "regfs",
            "commit",
            "dir",
            "--to",
            "localhost:5000/a:b",
            "--plain-http=false",
            "--https",
        ])
        .unwrap();
        let Command::Commit(c) = cli.command else {
            panic!("not commit")
        };
        assert_eq!((c.plain_http, c.https), (Some(false), true));
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
