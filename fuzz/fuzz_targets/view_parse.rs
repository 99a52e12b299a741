//! Manifest and index bytes (anything a registry or a layout may hand
//! over) into the folder view: never a panic, every name the view makes is
//! one the title rules allow, and no title takes a reserved name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfs::tree::view::{
    is_safe_component, Entry, View, BLOBS, CONFIG_JSON, MANIFEST_JSON, REFERRERS,
};

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

fn check(dir: &std::collections::BTreeMap<String, Entry>, view: &View, depth: usize) {
    assert!(depth < 4096, "a view nested {depth} deep");
    for (name, entry) in dir {
        assert!(is_safe_component(name), "unsafe name {name:?}");
        match entry {
            Entry::Dir(d) => check(d, view, depth + 1),
            Entry::Blob(i) | Entry::Unpacked(i) => assert!(*i < view.blobs.len()),
            Entry::Child(i) => assert!(*i < view.children.len()),
            Entry::ManifestJson | Entry::Referrers => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[which as usize % TYPES.len()];
    if let Ok(view) = View::parse(bytes, content_type) {
        assert_eq!(view.size, bytes.len() as u64);
        check(&view.root, &view, 0);
        assert_eq!(view.root.get(MANIFEST_JSON), Some(&Entry::ManifestJson));
        assert_eq!(view.root.get(REFERRERS), Some(&Entry::Referrers));
        assert!(matches!(view.root.get(BLOBS), None | Some(Entry::Dir(_))));
        if let Some(e) = view.root.get(CONFIG_JSON) {
            assert!(matches!(e, Entry::Blob(0)), "config.json is {e:?}");
        }
        let _ = view.created();
        for b in &view.blobs {
            let _ = view.names_of(&b.digest);
        }
    }
});
