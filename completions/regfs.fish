# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_regfs_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_regfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_regfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_regfs_using_subcommand
    set -l cmd (__fish_regfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c regfs -n "__fish_regfs_needs_command" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_needs_command" -s h -l help -d 'Print help'
complete -c regfs -n "__fish_regfs_needs_command" -s V -l version -d 'Print version'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "mount" -d 'Mount a registry or OCI layout; returns once the mount is live'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "umount" -d 'Unmount a regfs mount (fusermount3 -u works too)'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "commit" -d 'Push what is staged under PATH as manifests, indexes and tags'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "discard" -d 'Drop what is staged under PATH'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "status" -d 'Show staged changes, cache use, and blobs being fetched with bytes so far'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "verify" -d 'Hash every cached blob and manifest again; report (or with --repair drop) what does not match'
complete -c regfs -n "__fish_regfs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l plain-http -d 'Talk plain HTTP to the registry; =false: HTTPS, as --https. Without it, --https, --ca-file or --insecure, a loopback registry is tried over HTTPS first and over plain HTTP when its port does not speak TLS' -r -f -a "true\t''
false\t''"
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l ca-file -d 'Talk HTTPS, trusting the CA certificates in this PEM file as well' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l cache-dir -d 'Cache folder [default: $XDG_CACHE_HOME/regfs, else ~/.cache/regfs]' -r -f -a "(__fish_complete_directories)"
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l staging-dir -d 'Where staged changes live [default: CACHE_DIR/staging]' -r -f -a "(__fish_complete_directories)"
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l cache-size -d 'Most bytes of blobs to keep in the cache (K, M, G, T suffixes)' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l metadata-cache -d 'Memory for parsed manifests (K, M, G suffixes); the least recently used are dropped past it and parsed again from the disk cache' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l repo -d 'Show this repository even where the registry has no catalog (repeatable)' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l tag-ttl -d 'Seconds a tag\'s resolution (and a listing) is trusted before it is checked again' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l verify -d 'strict: no byte of a blob before all of it matched its digest; lazy: large blobs read by Range on demand, the end-of-file read waits for the check' -r -f -a "strict\t'No byte before the whole blob arrived and matched its digest'
lazy\t'Large blobs by Range on demand; the read reaching the end waits for the check'"
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l parallel-ranges -d 'Ranged requests that may fetch one blob at once: 1 = always one streaming GET; N = up to N concurrent 4 MiB ranges from the start. Default: one stream, and up to 8 ranges when it delivers less than 200 MB/s (a distant or congested registry)' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l request-spin -d 'Microseconds one FUSE thread keeps asking for the next request after one it answered at once (from memory), before it sleeps (a warm walk or grep then waits for no thread wake-up); not while requests or fetches are at work; 0: always sleep' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l timeout -d 'Seconds before a registry request (or a silent transfer) is given up' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l log-file -d 'Where the background daemon logs [default: CACHE_DIR/regfs.log]' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l mirror -d 'Read manifests and blobs through this registry mirror or pull-through cache, HOST[:PORT][/NAMESPACE], before the mirrors of registries.conf and the registry itself (repeatable; spoken to like the registry)' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l registries-conf -d 'The registries.conf to read mirrors from (also from CONTAINERS_REGISTRIES_CONF, as podman) instead of ~/.config/containers/registries.conf or /etc/containers/registries.conf; the registries.conf.d drop-ins are read too' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand mount" -s o -d 'Options as mount(8) and fstab pass them: -o plain-http,cache-size=2G,repo=a/b' -r
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l https -d 'Talk HTTPS, also to a loopback registry (as --plain-http=false)'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l insecure -d 'Talk HTTPS without verifying the registry\'s certificate'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l allow-other -d 'Let other users see the mount (FUSE allow_other)'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -l read-only -d 'Refuse every write with EROFS'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -s f -l foreground -d 'Stay in the foreground, logging to stderr'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand mount" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c regfs -n "__fish_regfs_using_subcommand umount" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand umount" -s h -l help -d 'Print help'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l output -d 'Write the JSON that would be pushed to FILE (- for stdout); push nothing' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l to -d 'Commit a plain local folder to HOST[:PORT]/REPO:TAG or oci:PATH:TAG, without a mount' -r
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l annotation-file -d 'ORAS annotation file: {"$manifest": {...}, "$config": {...}, "<title>": {...}}' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l artifact-type -d 'artifactType of new manifests [default: application/vnd.unknown.artifact.v1]' -r
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l tag -d 'Also point these tags at what is pushed (repeatable)' -r
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l plain-http -d 'With --to: talk plain HTTP; =false: HTTPS, as --https (as for mount: a loopback registry is otherwise tried over HTTPS first)' -r -f -a "true\t''
false\t''"
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l ca-file -d 'With --to: talk HTTPS, trusting the CA certificates in this PEM file as well' -r -F
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l timeout -d 'With --to: seconds before a registry request is given up' -r
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l dry-run -d 'Print the JSON that would be pushed; push nothing'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l no-chunk-lists -d 'Do not add chunk-digest lists to the manifests regfs builds (they let lazy reads verify each 4 MiB chunk; see docs/verification.md)'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l https -d 'With --to: talk HTTPS, also to a loopback registry'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -l insecure -d 'With --to: talk HTTPS without verifying the registry\'s certificate'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand commit" -s h -l help -d 'Print help'
complete -c regfs -n "__fish_regfs_using_subcommand discard" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand discard" -s h -l help -d 'Print help'
complete -c regfs -n "__fish_regfs_using_subcommand status" -l cache-dir -d 'Cache folder to report on when no mount is given [default: $XDG_CACHE_HOME/regfs]' -r -f -a "(__fish_complete_directories)"
complete -c regfs -n "__fish_regfs_using_subcommand status" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand status" -s h -l help -d 'Print help'
complete -c regfs -n "__fish_regfs_using_subcommand verify" -l cache-dir -d 'Cache folder [default: $XDG_CACHE_HOME/regfs, else ~/.cache/regfs]' -r -f -a "(__fish_complete_directories)"
complete -c regfs -n "__fish_regfs_using_subcommand verify" -l repair -d 'Drop what does not match (a mount fetches it again when it is read)'
complete -c regfs -n "__fish_regfs_using_subcommand verify" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c regfs -n "__fish_regfs_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "mount" -d 'Mount a registry or OCI layout; returns once the mount is live'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "umount" -d 'Unmount a regfs mount (fusermount3 -u works too)'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "commit" -d 'Push what is staged under PATH as manifests, indexes and tags'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "discard" -d 'Drop what is staged under PATH'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "status" -d 'Show staged changes, cache use, and blobs being fetched with bytes so far'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "verify" -d 'Hash every cached blob and manifest again; report (or with --repair drop) what does not match'
complete -c regfs -n "__fish_regfs_using_subcommand help; and not __fish_seen_subcommand_from mount umount commit discard status verify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
