//! The inode table: a stable number for each key while the kernel holds
//! it, the node behind it, and the kernel's reference count, so memory
//! follows what the kernel remembers, not everything a mount ever walked.
//!
//! Three kinds of key:
//! - a name under a parent folder (and, inside a manifest folder, the
//!   manifest it came from, so a moved tag gives new inodes);
//! - a blob digest: every name of one blob anywhere in the mount (titled
//!   files and `blobs/sha256/<hex>` of every tag, platform, referrer and
//!   repository) is one inode, so `rsync -aH`, `cp -a` and `tar` copy it
//!   once;
//! - a file inside a layer's tree (unpacked directory layer or tar layer):
//!   one inode per (layer digest, path), wherever the layer is.
//!
//! Blob and layer-file inodes get numbers derived from their key, so the
//! same blob has the same number even after the kernel forgot it and
//! looked it up again (a long `rsync -aH` sees every name of a blob as the
//! same file, whatever the kernel dropped in between).
//!
//! Reference counting follows FUSE: every entry handed to the kernel
//! (lookup, readdirplus, create, mkdir, link) is `hold`; `forget` gives
//! them back, and a slot the kernel no longer holds is dropped. Slots made
//! only by listing a folder (held by nobody) are dropped by `sweep` once
//! they have sat through a whole sweep period without being interned.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use super::{hash64, Ino, Name, Node, ROOT_INO};
use crate::digest::Digest;

/// What identifies an inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `version`: inside a manifest folder, a hash of the manifest's
    /// digest (`Key::child`; 8 bytes where the digest is 88 with its
    /// text), `NO_VERSION` elsewhere. The name inline when short.
    Child {
        parent: Ino,
        name: Name,
        version: u64,
    },
    /// A blob, wherever in the mount it is named, as its descriptors show
    /// it: `shown` is a hash of what a name's extended attributes say
    /// (media type, annotations), so names whose descriptors differ there
    /// (a per-tag annotation) are inodes of their own with their own
    /// attributes. See `Key::blob`.
    Blob { digest: Digest, shown: u64 },
    /// A file of a layer's tree, wherever in the mount the layer is.
    /// (layer digest, path): boxed, as the rarest key, so that every key
    /// (held in every slot) is 8 bytes smaller.
    LayerFile(Box<(Digest, Vec<String>)>),
}

impl Key {
    /// The key of `name` under `parent`; inside a manifest folder,
    /// `version` is the manifest, so a moved tag gives new inodes.
    pub fn child(parent: Ino, name: &str, version: Option<&Digest>) -> Key {
        Key::Child {
            parent,
            name: name.into(),
            version: version.map_or(NO_VERSION, |d| hash64(d).max(1)),
        }
    }

    /// The key of a blob named by descriptor `desc`.
    pub fn blob(desc: &super::view::Desc) -> Key {
        let shown = (
            &desc.media_type,
            &desc.annotations,
            &desc.artifact_type,
            desc.size,
        );
        Key::Blob {
            digest: desc.digest.clone(),
            shown: hash64(&shown),
        }
    }

    /// Keys naming content rather than a place: one inode wherever found.
    fn is_content(&self) -> bool {
        !matches!(self, Key::Child { .. })
    }

    /// The number a content key asks for (high bit set, so it never meets
    /// the counter's numbers).
    fn derived_ino(&self) -> Option<Ino> {
        if !self.is_content() {
            return None;
        }
        Some(DERIVED | (hash64(self) & (DERIVED - 1)))
    }
}

/// The version of a key outside a manifest folder (a manifest's is never 0).
const NO_VERSION: u64 = 0;

/// Derived inode numbers have this bit set; counted ones stay below it.
const DERIVED: Ino = 1 << 62;

/// Slots first made before a sweep are dropped at the next one unless held
/// or interned again; sweeps come when the table doubles, and not before
/// it holds this many slots.
const MIN_SWEEP: usize = 16 * 1024;

/// Maps with at most this many buckets are not shrunk.
const MIN_SHRINK: usize = 4096;

/// Where the names of an inode are: in no manifest folder yet (`NONE`), in
/// one (its inode number), or in more (`MANY`). One number, not an enum
/// (8 bytes a slot less): no inode is 0, none is `Ino::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Folders(Ino);

impl Folders {
    const NONE: Folders = Folders(0);
    const MANY: Folders = Folders(Ino::MAX);
}

struct Slot {
    /// Inline, not behind an `Arc`: 64 bytes here where a shared node cost
    /// a pointer and a 112-byte allocation; `get` hands out a copy.
    node: Node,
    /// The first key that finds this inode (nearly always the only one;
    /// others are in `more`).
    key: Option<Key>,
    /// The sweep period in which it was last interned (`EPOCH`), and
    /// `CHANGED` and `DERIVED`: one word where three fields took eight
    /// bytes (a slot is 128 bytes, two to a 256-byte line pair).
    marks: u32,
    /// Entries for it given to the kernel, less those it forgot; at
    /// `u32::MAX` (never met: one a lookup) it stays for good.
    lookups: u32,
    /// What its first key does not say (see `More`); `None` for nearly
    /// every name under a folder: 8 bytes a slot where the fields took 48.
    more: Option<Box<More>>,
}

/// Of a slot: where and under what name it was last looked up, its link
/// count and the manifest folders it is named in, when these are not
/// what its first key says (the key's folder and name, one link, no
/// folder). Blobs (named in many places) and renamed inodes have one.
#[derive(Clone)]
struct More {
    parent: Ino,
    /// `None`: the name of the first key (a name is not kept twice).
    name: Option<Name>,
    /// Names under which the kernel knows this inode (for nlink).
    links: u32,
    folders: Folders,
    /// Keys besides the slot's first (rare: an inode a rename or a merge
    /// gave a second name). A box of a `Vec` (one pointer where a `Vec`
    /// is three): a `More` stays 56 bytes, and every blob has one.
    #[allow(clippy::box_collection)]
    keys: Option<Box<Vec<Key>>>,
}

/// Of `Slot::marks`: the node was replaced at some point (the kernel's
/// cached pages for this inode may hold other bytes).
const CHANGED: u32 = 1 << 31;
/// Of `Slot::marks`: its number is derived (its place in `Slots` is
/// another).
const DERIVED_MARK: u32 = 1 << 30;
/// Of `Slot::marks`: the sweep period.
const EPOCH: u32 = DERIVED_MARK - 1;

impl Slot {
    fn changed(&self) -> bool {
        self.marks & CHANGED != 0
    }

    fn set_changed(&mut self) {
        self.marks |= CHANGED;
    }

    fn derived(&self) -> bool {
        self.marks & DERIVED_MARK != 0
    }

    fn epoch(&self) -> u32 {
        self.marks & EPOCH
    }

    fn set_epoch(&mut self, epoch: u32) {
        self.marks = (self.marks & !EPOCH) | (epoch & EPOCH);
    }

    fn new(node: Node, key: Option<Key>, parent: Ino, name: &str, links: u32) -> Slot {
        let mut s = Slot {
            node,
            key,
            marks: 0,
            lookups: 0,
            more: None,
        };
        s.set_parent(parent);
        s.set_name(name);
        s.set_links(links);
        s
    }

    fn key_child(&self) -> Option<(Ino, &str)> {
        match &self.key {
            Some(Key::Child { parent, name, .. }) => Some((*parent, name)),
            _ => None,
        }
    }

    /// `more`, made from what the first key says if there is none.
    fn more_mut(&mut self) -> &mut More {
        let parent = self.parent();
        self.more.get_or_insert_with(|| {
            Box::new(More {
                parent,
                name: None,
                links: 1,
                folders: Folders::NONE,
                keys: None,
            })
        })
    }

    fn parent(&self) -> Ino {
        match (&self.more, self.key_child()) {
            (Some(m), _) => m.parent,
            (None, Some((p, _))) => p,
            (None, None) => ROOT_INO,
        }
    }

    fn set_parent(&mut self, parent: Ino) {
        if self.parent() != parent {
            self.more_mut().parent = parent;
        }
    }

    fn name(&self) -> &str {
        match (
            self.more.as_ref().and_then(|m| m.name.as_ref()),
            self.key_child(),
        ) {
            (Some(n), _) => n,
            (None, Some((_, n))) => n,
            (None, None) => "",
        }
    }

    fn set_name(&mut self, name: &str) {
        if self.key_child().is_some_and(|(_, k)| k == name) {
            if let Some(m) = &mut self.more {
                m.name = None;
            }
        } else if self.name() != name {
            self.more_mut().name = Some(name.into());
        }
    }

    fn links(&self) -> u32 {
        self.more.as_ref().map_or(1, |m| m.links)
    }

    fn set_links(&mut self, links: u32) {
        if self.links() != links {
            self.more_mut().links = links;
        }
    }

    fn folders(&self) -> Folders {
        self.more.as_ref().map_or(Folders::NONE, |m| m.folders)
    }

    fn set_folders(&mut self, folders: Folders) {
        if self.folders() != folders {
            self.more_mut().folders = folders;
        }
    }

    /// The keys that find this inode.
    fn keys(&self) -> impl Iterator<Item = &Key> {
        self.key.iter().chain(
            self.more
                .iter()
                .flat_map(|m| m.keys.iter().flat_map(|k| k.iter())),
        )
    }

    fn has_key(&self, key: &Key) -> bool {
        self.keys().any(|k| k == key)
    }

    /// Changes the keys, keeping the folder and the name.
    fn edit_keys(&mut self, edit: impl FnOnce(&mut Vec<Key>)) {
        let name: Name = self.name().into();
        let mut rest = {
            let more = self.more_mut();
            more.name = Some(name.clone());
            more.keys.take().map_or_else(Vec::new, |k| *k)
        };
        let mut keys: Vec<Key> = self.key.take().into_iter().collect();
        keys.append(&mut rest);
        edit(&mut keys);
        let mut keys = keys.into_iter();
        self.key = keys.next();
        let rest: Vec<Key> = keys.collect();
        if let Some(m) = &mut self.more {
            m.keys = (!rest.is_empty()).then(|| Box::new(rest));
        }
        self.set_name(&name);
    }
}

/// The slots, found by inode number. Counted numbers are handed out in
/// order and never reused, so their slots sit in a queue at `number -
/// base`, in pages of `PAGE` places. A derived number (a content key's) is
/// given the next counted number as its place, found through `derived`
/// (16 bytes an entry where a map of slots holds a whole slot in every
/// bucket, half of them empty).
/// Compared with one map of slots this holds no empty buckets (a map is up
/// to half empty, and doubles by copying every slot, which is a spike of
/// three tables' memory at a million slots); compared with one block of
/// places, it grows a page at a time (a block doubles, copying itself into
/// a fresh one, and leaves the old one to the allocator), and the pages
/// of the front go back as the kernel forgets them. A page left vacant at
/// the front is dropped; when most of the queue is vacant (a few early
/// inodes held long after a walk was forgotten), its live slots move to
/// `map` (by place) and the queue starts again. The root is in `map` too.
struct Slots {
    pages: std::collections::VecDeque<Page>,
    /// The number of the first place of `pages[0]`.
    base: Ino,
    /// One past the last place handed out.
    end: Ino,
    /// Live slots in the pages.
    queued: usize,
    map: HashMap<Ino, Slot>,
    /// Derived number -> its place.
    derived: HashMap<Ino, Ino>,
}

/// Places per page (about 200 KiB of slots).
const PAGE: usize = 1024;

struct Page {
    live: u32,
    slots: Box<[Option<Slot>]>,
}

impl Page {
    fn new() -> Page {
        Page {
            live: 0,
            slots: (0..PAGE).map(|_| None).collect(),
        }
    }
}

impl Slots {
    /// `first`: the first counted number.
    fn new(first: Ino) -> Slots {
        Slots {
            pages: Default::default(),
            base: first,
            end: first,
            queued: 0,
            map: HashMap::new(),
            derived: HashMap::new(),
        }
    }

    /// Where the slot of `ino` is (itself, for a counted number).
    fn place_of(&self, ino: Ino) -> Option<Ino> {
        if ino & DERIVED == 0 {
            Some(ino)
        } else {
            self.derived.get(&ino).copied()
        }
    }

    /// The page and the place in it of `place`, when it is in the queue.
    fn index(&self, place: Ino) -> Option<(usize, usize)> {
        if place < self.base || place >= self.end {
            return None;
        }
        let i = usize::try_from(place - self.base).ok()?;
        Some((i / PAGE, i % PAGE))
    }

    fn get(&self, ino: &Ino) -> Option<&Slot> {
        let place = self.place_of(*ino)?;
        match self.index(place) {
            Some((p, i)) => self.pages[p].slots[i].as_ref(),
            None => self.map.get(&place),
        }
    }

    fn get_mut(&mut self, ino: &Ino) -> Option<&mut Slot> {
        let place = self.place_of(*ino)?;
        match self.index(place) {
            Some((p, i)) => self.pages[p].slots[i].as_mut(),
            None => self.map.get_mut(&place),
        }
    }

    fn contains_key(&self, ino: &Ino) -> bool {
        self.get(ino).is_some()
    }

    /// `ino` is the next counted number or the root; or a derived one, put
    /// at `place`, the next counted number.
    fn insert(&mut self, ino: Ino, place: Ino, mut slot: Slot) {
        if ino & DERIVED != 0 {
            slot.marks |= DERIVED_MARK;
            if let Some(old) = self.derived.insert(ino, place) {
                self.remove_place(old);
            }
        }
        if place == self.end {
            if (self.end - self.base) as usize == self.pages.len() * PAGE {
                self.pages.push_back(Page::new());
            }
            self.end += 1;
        }
        match self.index(place) {
            Some((p, i)) => {
                let page = &mut self.pages[p];
                if page.slots[i].is_none() {
                    page.live += 1;
                    self.queued += 1;
                }
                page.slots[i] = Some(slot);
            }
            None => {
                self.map.insert(place, slot);
            }
        }
    }

    fn remove(&mut self, ino: &Ino) -> Option<Slot> {
        let place = if ino & DERIVED == 0 {
            *ino
        } else {
            let place = self.derived.remove(ino)?;
            shrink_map(&mut self.derived);
            place
        };
        self.remove_place(place)
    }

    fn remove_place(&mut self, place: Ino) -> Option<Slot> {
        let Some((p, i)) = self.index(place) else {
            let s = self.map.remove(&place);
            shrink_map(&mut self.map);
            return s;
        };
        let s = self.pages[p].slots[i].take();
        if s.is_some() {
            self.pages[p].live -= 1;
            self.queued -= 1;
        }
        // Vacant whole pages at the front go (not one still being filled).
        while self
            .pages
            .front()
            .is_some_and(|f| f.live == 0 && self.base + PAGE as Ino <= self.end)
        {
            self.pages.pop_front();
            self.base += PAGE as Ino;
        }
        let places = self.pages.len() * PAGE;
        if places > MIN_SHRINK && self.queued * 4 < places {
            let base = self.base;
            let pages = std::mem::take(&mut self.pages);
            for (n, page) in pages.into_iter().enumerate() {
                for (i, s) in page.slots.into_vec().into_iter().enumerate() {
                    if let Some(s) = s {
                        self.map.insert(base + (n * PAGE + i) as Ino, s);
                    }
                }
            }
            self.base = self.end;
            self.queued = 0;
        }
        if self.pages.capacity() > 64 && self.pages.len() * 4 < self.pages.capacity() {
            self.pages.shrink_to(self.pages.len() * 2);
        }
        s
    }

    fn len(&self) -> usize {
        self.queued + self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slot with its inode number.
    fn iter(&self) -> impl Iterator<Item = (Ino, &Slot)> {
        let base = self.base;
        let queued = self.pages.iter().enumerate().flat_map(move |(n, page)| {
            page.slots
                .iter()
                .enumerate()
                .filter_map(move |(i, s)| Some((base + (n * PAGE + i) as Ino, s.as_ref()?)))
        });
        let counted = queued
            .chain(self.map.iter().map(|(&i, s)| (i, s)))
            .filter(|(_, s)| !s.derived());
        let derived = self
            .derived
            .keys()
            .filter_map(|&d| Some((d, self.get(&d)?)));
        counted.chain(derived)
    }

    /// Places held for slots (vacant ones included) and map buckets.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.pages.len() * PAGE + self.map.capacity() + self.derived.capacity()
    }
}

/// Maps keep their capacity when emptied: shrunk once three quarters are
/// free (to twice what is left, so shrinking costs O(1) a removal over
/// time).
fn shrink_map<V>(map: &mut HashMap<Ino, V>) {
    let cap = map.capacity();
    if cap > MIN_SHRINK && map.len() * 4 < cap {
        map.shrink_to(map.len() * 2);
    }
}

/// Which inode each key finds. Only inode numbers are held here, each at
/// the hash of its slot's first key (8 bytes an entry, rehashed from the
/// slots when the table grows); the keys live in their slots, so a name is
/// not kept twice. A slot's other keys (an inode a rename or a merge gave
/// a second one: rare) are in `extra`. A slot is taken out before its
/// keys change and put back after (`Inodes::edit_keys`), so every entry is
/// where its slot's first key hashes.
struct KeyIndex {
    table: hashbrown::HashTable<Ino>,
    extra: HashMap<Key, Ino>,
    /// Keyed per table: names come from registries.
    state: std::hash::RandomState,
}

/// The hash `table` keeps `ino` at: its slot's first key's (a number
/// without a slot or a key is never in the table; hashing the number keeps
/// the closure total).
fn slot_hash(state: &std::hash::RandomState, slots: &Slots, ino: Ino) -> u64 {
    use std::hash::BuildHasher;
    match slots.get(&ino).and_then(|s| s.key.as_ref()) {
        Some(k) => state.hash_one(k),
        None => state.hash_one(ino),
    }
}

impl KeyIndex {
    fn new() -> KeyIndex {
        KeyIndex {
            table: hashbrown::HashTable::new(),
            extra: HashMap::new(),
            state: std::hash::RandomState::new(),
        }
    }

    fn hash(&self, key: &Key) -> u64 {
        use std::hash::BuildHasher;
        self.state.hash_one(key)
    }

    fn get(&self, slots: &Slots, key: &Key) -> Option<Ino> {
        let h = self.hash(key);
        self.table
            .find(h, |&i| {
                slots.get(&i).is_some_and(|s| s.key.as_ref() == Some(key))
            })
            .copied()
            .or_else(|| {
                self.extra
                    .get(key)
                    .copied()
                    .filter(|i| slots.get(i).is_some_and(|s| s.has_key(key)))
            })
    }

    /// Puts `ino`'s keys in, as its slot holds them now.
    fn index(&mut self, slots: &Slots, ino: Ino) {
        let Some(s) = slots.get(&ino) else {
            return;
        };
        let mut keys = s.keys();
        if let Some(first) = keys.next() {
            let h = self.hash(first);
            let state = &self.state;
            self.table
                .insert_unique(h, ino, |&i| slot_hash(state, slots, i));
        }
        for k in keys {
            self.extra.insert(k.clone(), ino);
        }
    }

    /// Takes `ino`'s keys out, as its slot holds them now.
    fn unindex(&mut self, slots: &Slots, ino: Ino) {
        let Some(s) = slots.get(&ino) else {
            return;
        };
        let mut keys = s.keys();
        if let Some(first) = keys.next() {
            if let Ok(e) = self.table.find_entry(self.hash(first), |&i| i == ino) {
                e.remove();
            }
        }
        for k in keys {
            if self.extra.get(k) == Some(&ino) {
                self.extra.remove(k);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Gives back what a walk the kernel forgot left empty.
    fn shrink(&mut self, slots: &Slots) {
        let cap = self.table.capacity();
        if cap > MIN_SHRINK && self.table.len() * 4 < cap {
            let state = &self.state;
            self.table
                .shrink_to(self.table.len() * 2, |&i| slot_hash(state, slots, i));
        }
        if self.extra.is_empty() && self.extra.capacity() > 0 {
            self.extra = HashMap::new();
        }
    }
}

/// The inode table: stable numbers for keys, and the node behind each.
pub struct Inodes {
    by_key: KeyIndex,
    slots: Slots,
    next: Ino,
    epoch: u32,
    sweep_at: usize,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes::new()
    }
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut slots = Slots::new(ROOT_INO + 1);
        let mut root = Slot::new(Node::Root, None, ROOT_INO, "", 1);
        root.lookups = 1; // the kernel never forgets the root
        slots.insert(ROOT_INO, ROOT_INO, root);
        Inodes {
            by_key: KeyIndex::new(),
            slots,
            next: ROOT_INO + 1,
            epoch: 0,
            sweep_at: MIN_SWEEP,
        }
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.slots.get(&ino).map(|s| Arc::new(s.node.clone()))
    }

    pub fn parent(&self, ino: Ino) -> Ino {
        self.slots.get(&ino).map(|s| s.parent()).unwrap_or(ROOT_INO)
    }

    /// The inode for `key`, made from `node` the first time, found again
    /// under `parent`/`name`. A place key whose node changed (a staged
    /// folder that became a tag after a commit) keeps its number with the
    /// new node; a content key keeps the node it was first made with (the
    /// same bytes, wherever named). `links` is the number of names the node
    /// has (2 for a titled blob).
    pub fn intern(
        &mut self,
        key: Key,
        parent: Ino,
        name: &str,
        node: Node,
        links: u32,
    ) -> (Ino, Arc<Node>) {
        let epoch = self.epoch;
        if let Some(ino) = self.by_key.get(&self.slots, &key) {
            if let Some(s) = self.slots.get_mut(&ino) {
                // Link counts can only grow as more names of a blob are seen.
                let links = s.links().max(links);
                s.set_links(links);
                s.set_parent(parent);
                s.set_epoch(epoch);
                s.set_name(name);
                if !key.is_content() && s.node != node {
                    s.node = node;
                    s.set_changed();
                }
                return (ino, Arc::new(s.node.clone()));
            }
        }
        if self.slots.len() >= self.sweep_at {
            self.sweep();
        }
        let place = self.counted();
        let ino = match key.derived_ino() {
            Some(i) if !self.slots.contains_key(&i) => i,
            _ => place,
        };
        let node = Arc::new(node);
        let mut slot = Slot::new((*node).clone(), Some(key), parent, name, links);
        slot.set_epoch(self.epoch);
        self.slots.insert(ino, place, slot);
        self.by_key.index(&self.slots, ino);
        (ino, node)
    }

    fn counted(&mut self) -> Ino {
        let ino = self.next;
        self.next += 1;
        ino
    }

    /// Notes that `ino` is named inside the manifest folder `folder`.
    pub fn named_in(&mut self, ino: Ino, folder: Ino) {
        if let Some(s) = self.slots.get_mut(&ino) {
            let folders = match s.folders() {
                Folders::NONE => Folders(folder),
                Folders(f) if f == folder => Folders(f),
                _ => Folders::MANY,
            };
            s.set_folders(folders);
        }
    }

    /// Whether `ino` has names in more than one manifest folder.
    pub fn in_many_folders(&self, ino: Ino) -> bool {
        self.slots
            .get(&ino)
            .is_some_and(|s| s.folders() == Folders::MANY)
    }

    /// The kernel was given an entry for `ino`. False when there is no
    /// such inode (any more): the caller looks its name up again.
    pub fn hold(&mut self, ino: Ino) -> bool {
        match self.slots.get_mut(&ino) {
            Some(s) => {
                s.lookups = s.lookups.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// The kernel forgot `n` of its entries for `ino`; at none, the slot
    /// goes (the root stays).
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let gone = match self.slots.get_mut(&ino) {
            Some(s) => {
                if s.lookups != u32::MAX {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    s.lookups = s.lookups.saturating_sub(n);
                }
                s.lookups == 0
            }
            None => false,
        };
        if gone {
            self.remove(ino);
        }
    }

    fn remove(&mut self, ino: Ino) {
        self.by_key.unindex(&self.slots, ino);
        self.slots.remove(&ino);
        // Maps keep their capacity when emptied: a walk of a million paths
        // would hold tens of MiB of empty buckets after the kernel forgot
        // it. Shrunk once three quarters are free (to twice what is left,
        // so shrinking costs O(1) a removal over time); `Slots` does the
        // same for its own.
        self.by_key.shrink(&self.slots);
    }

    /// Changes the keys of `ino` by `edit`, keeping the index right: a key
    /// it gains is taken from the inode that held it, if another.
    fn edit_keys(&mut self, ino: Ino, edit: impl FnOnce(&mut Vec<Key>)) {
        self.by_key.unindex(&self.slots, ino);
        let Some(s) = self.slots.get_mut(&ino) else {
            return;
        };
        s.edit_keys(edit);
        let keys: Vec<Key> = s.keys().cloned().collect();
        for k in &keys {
            if let Some(o) = self.by_key.get(&self.slots, k) {
                self.by_key.unindex(&self.slots, o);
                if let Some(os) = self.slots.get_mut(&o) {
                    os.edit_keys(|ks| ks.retain(|x| x != k));
                }
                self.by_key.index(&self.slots, o);
            }
        }
        self.by_key.index(&self.slots, ino);
    }

    /// Drops the slots nobody holds that were not interned since the last
    /// sweep, and starts a new period.
    pub fn sweep(&mut self) {
        let before = self.epoch;
        let idle: Vec<Ino> = self
            .slots
            .iter()
            .filter(|&(i, s)| i != ROOT_INO && s.lookups == 0 && s.epoch() < before)
            .map(|(i, _)| i)
            .collect();
        for i in idle {
            self.remove(i);
        }
        self.epoch = self.epoch.wrapping_add(1) & EPOCH;
        self.sweep_at = MIN_SWEEP.max(self.slots.len() * 2);
    }

    /// Gives `ino` a new node and key, keeping its number (a registry file
    /// copied up into the staging area while the kernel holds it open).
    pub fn rebind(&mut self, ino: Ino, key: Key, node: Node) {
        self.edit_keys(ino, |keys| {
            keys.clear();
            keys.push(key);
        });
        let Some(s) = self.slots.get_mut(&ino) else {
            return;
        };
        s.node = node;
        s.set_links(1);
        s.set_changed();
        s.set_folders(Folders::NONE);
    }

    /// Makes `into` stand for what `from` stands for: every key of `from`
    /// now finds `into`, with `from`'s node and links.
    pub fn merge_into(&mut self, from: Ino, into: Ino) {
        if from == into {
            return;
        }
        let mut keys = Vec::new();
        self.edit_keys(from, |k| keys = std::mem::take(k));
        let Some(src) = self.slots.get(&from) else {
            return;
        };
        let (node, links) = (src.node.clone(), src.links());
        if src.lookups == 0 {
            self.remove(from);
        }
        self.edit_keys(into, |k| k.extend(keys));
        if let Some(dst) = self.slots.get_mut(&into) {
            dst.node = node;
            dst.set_links(links);
            dst.set_changed();
        }
    }

    /// Moves the inode known as `parent`/`name` to `new_parent`/`new_name`.
    pub fn rename(&mut self, from: Key, to: Key, new_parent: Ino, new_name: &str) {
        if let Some(ino) = self.by_key.get(&self.slots, &from) {
            self.edit_keys(ino, |keys| {
                keys.retain(|k| *k != from);
                keys.push(to);
            });
            if let Some(s) = self.slots.get_mut(&ino) {
                s.set_parent(new_parent);
                s.set_name(new_name);
            }
        }
    }

    /// The names from the root down to `ino` (empty for the root). `None`
    /// when the chain is broken or loops.
    pub fn path(&self, ino: Ino) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                out.reverse();
                return Some(out);
            }
            let s = self.slots.get(&cur)?;
            out.push(s.name().to_string());
            cur = s.parent();
        }
        None
    }

    /// Whether the node behind `ino` was ever replaced.
    pub fn changed(&self, ino: Ino) -> bool {
        self.slots.get(&ino).is_some_and(|s| s.changed())
    }

    pub fn links(&self, ino: Ino) -> u32 {
        self.slots.get(&ino).map(|s| s.links()).unwrap_or(1)
    }

    /// The (parent, name) of every held inode whose parent's node passes
    /// `folder`, and every held folder (the root included).
    pub fn held_names(&self, folder: impl Fn(&Node) -> bool) -> (Vec<(Ino, String)>, Vec<Ino>) {
        let mut names = Vec::new();
        let mut folders = vec![ROOT_INO];
        for (ino, s) in self.slots.iter() {
            if ino == ROOT_INO || s.lookups == 0 {
                continue;
            }
            if s.node.is_dir() {
                folders.push(ino);
            }
            if self.slots.get(&s.parent()).is_some_and(|p| folder(&p.node)) {
                names.push((s.parent(), s.name().to_string()));
            }
        }
        (names, folders)
    }

    /// The kernel's references to `ino` (0 when unknown).
    pub fn lookups(&self, ino: Ino) -> u64 {
        self.slots.get(&ino).map_or(0, |s| u64::from(s.lookups))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(p: Ino, n: &str) -> Key {
        Key::Child {
            parent: p,
            name: n.into(),
            version: NO_VERSION,
        }
    }

    fn blob_key(b: &[u8]) -> Key {
        Key::Blob {
            digest: Digest::of(b),
            shown: 0,
        }
    }

    fn staged(dir: bool) -> Node {
        Node::Staged { dir }
    }

    #[test]
    fn same_key_same_inode() {
        let mut t = Inodes::new();
        let repo = Node::Repo {
            path: "repo".into(),
        };
        let (a, _) = t.intern(child(ROOT_INO, "repo"), ROOT_INO, "repo", repo, 1);
        let (b, _) = t.intern(child(ROOT_INO, "repo"), ROOT_INO, "repo", staged(true), 1);
        assert_eq!(a, b);
        assert_ne!(a, ROOT_INO);
        assert_eq!(t.parent(a), ROOT_INO);
        assert_eq!(
            *t.get(a).unwrap(),
            staged(true),
            "a changed node is replaced"
        );
        assert_eq!(t.path(a), Some(vec!["repo".to_string()]));
    }

    #[test]
    fn a_blob_is_one_inode_wherever_named_and_keeps_its_first_node() {
        let mut t = Inodes::new();
        let key = blob_key(b"b");
        let (a, _) = t.intern(key.clone(), 7, "title", Node::Root, 1);
        t.named_in(a, 7);
        assert!(!t.in_many_folders(a));
        let (b, n) = t.intern(key, 9, "hex", staged(false), 2);
        t.named_in(b, 9);
        assert_eq!(a, b);
        assert_eq!(t.links(a), 2);
        assert_eq!(*n, Node::Root, "the first node stays");
        assert!(!t.changed(a));
        assert!(t.in_many_folders(a));
    }

    #[test]
    fn a_forgotten_inode_goes_and_a_blob_comes_back_with_its_number() {
        let mut t = Inodes::new();
        let (d, _) = t.intern(child(ROOT_INO, "d"), ROOT_INO, "d", staged(true), 1);
        let (b, _) = t.intern(blob_key(b"x"), d, "x", Node::Root, 2);
        assert!(b >= DERIVED, "a blob's number is derived from its digest");
        assert!(t.hold(d) && t.hold(b) && t.hold(b));
        t.forget(b, 1);
        assert!(t.get(b).is_some(), "still held once");
        t.forget(b, 1);
        assert!(t.get(b).is_none());
        t.forget(d, 1);
        assert!(t.get(d).is_none());
        assert_eq!(t.len(), 1, "only the root is left");
        assert!(!t.hold(d), "a forgotten inode cannot be held");
        let (d2, _) = t.intern(child(ROOT_INO, "d"), ROOT_INO, "d", staged(true), 1);
        assert_ne!(d2, d, "a place gets a new number");
        let (b2, _) = t.intern(blob_key(b"x"), d2, "x", Node::Root, 2);
        assert_eq!(b2, b, "a blob gets its number back");
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn sweeps_drop_only_what_nobody_holds_and_nobody_just_made() {
        let mut t = Inodes::new();
        let (held, _) = t.intern(child(ROOT_INO, "held"), ROOT_INO, "held", staged(true), 1);
        assert!(t.hold(held));
        let (listed, _) = t.intern(child(ROOT_INO, "l"), ROOT_INO, "l", staged(false), 1);
        t.sweep();
        assert!(
            t.get(listed).is_some(),
            "made in the period just ended: kept"
        );
        let (fresh, _) = t.intern(child(ROOT_INO, "f"), ROOT_INO, "f", staged(false), 1);
        t.sweep();
        assert!(t.get(listed).is_none(), "idle for a whole period: dropped");
        assert!(t.get(fresh).is_some());
        assert!(t.get(held).is_some());
        let (again, _) = t.intern(child(ROOT_INO, "l"), ROOT_INO, "l", staged(false), 1);
        assert!(t.get(again).is_some());
    }

    #[test]
    fn the_table_stays_bounded_by_what_is_held() {
        let mut t = Inodes::new();
        for i in 0..(MIN_SWEEP * 8) {
            let name = format!("n{i}");
            t.intern(child(ROOT_INO, &name), ROOT_INO, &name, staged(false), 1);
        }
        assert!(
            t.len() <= MIN_SWEEP * 2,
            "{} slots for nothing held",
            t.len()
        );
    }

    /// Names `n0`... under the root, each given to the kernel once.
    fn hold_names(t: &mut Inodes, n: usize) -> Vec<Ino> {
        (0..n)
            .map(|i| {
                let name = format!("n{i}");
                let (ino, _) = t.intern(child(ROOT_INO, &name), ROOT_INO, &name, staged(false), 1);
                t.hold(ino);
                ino
            })
            .collect()
    }

    #[test]
    fn what_the_kernel_forgot_gives_its_memory_back() {
        let mut t = Inodes::new();
        let held = hold_names(&mut t, 50_000);
        assert!(t.slots.capacity() >= 50_000);
        for ino in held {
            t.forget(ino, 1);
        }
        assert_eq!(t.len(), 1, "the root stays");
        assert!(
            t.slots.capacity() <= MIN_SHRINK * 2 && t.by_key.capacity() <= MIN_SHRINK * 2,
            "{} and {} buckets left for one inode",
            t.slots.capacity(),
            t.by_key.capacity()
        );
    }

    #[test]
    fn an_early_inode_held_long_does_not_keep_the_places_of_those_forgotten() {
        let mut t = Inodes::new();
        let mut held = hold_names(&mut t, 50_000);
        let blob = t.intern(blob_key(b"x"), ROOT_INO, "x", Node::Root, 2).0;
        t.hold(blob);
        // Keep the first, one in the middle, the last; forget the rest.
        let keep = [held[0], held[25_000], held[49_999], blob];
        held.retain(|i| !keep.contains(i));
        for ino in held {
            t.forget(ino, 1);
        }
        assert_eq!(t.len(), 5, "the root and the four kept");
        assert!(
            t.slots.capacity() <= MIN_SHRINK * 2,
            "{} places",
            t.slots.capacity()
        );
        for (i, ino) in keep.iter().enumerate() {
            assert!(t.get(*ino).is_some(), "kept inode {i} is still found");
        }
        assert_eq!(t.path(keep[1]), Some(vec!["n25000".to_string()]));
        // Numbers go on from where they were, never reused.
        let (next, _) = t.intern(child(ROOT_INO, "new"), ROOT_INO, "new", staged(false), 1);
        assert!(next > keep[2]);
        assert_eq!(
            t.intern(child(ROOT_INO, "n0"), ROOT_INO, "n0", staged(false), 1)
                .0,
            keep[0]
        );
        t.forget(keep[1], 1);
        assert!(t.get(keep[1]).is_none());
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn the_queue_grows_and_gives_back_a_page_at_a_time() {
        let mut t = Inodes::new();
        let held = hold_names(&mut t, 5 * PAGE + 1);
        assert_eq!(t.slots.pages.len(), 6, "one page more when one is full");
        // Forgotten in the order they came, the front pages go one by one.
        for (n, ino) in held.iter().take(3 * PAGE).enumerate() {
            t.forget(*ino, 1);
            assert_eq!(t.slots.pages.len(), 6 - (n + 1) / PAGE);
        }
        assert_eq!(t.path(held[3 * PAGE]), Some(vec![format!("n{}", 3 * PAGE)]));
        assert_eq!(t.len(), 2 * PAGE + 2);
        // The last page, still being filled, stays when emptied.
        for ino in &held[3 * PAGE..] {
            t.forget(*ino, 1);
        }
        assert_eq!(t.slots.pages.len(), 1);
        let (next, _) = t.intern(child(ROOT_INO, "next"), ROOT_INO, "next", staged(false), 1);
        assert!(next > held[5 * PAGE]);
        assert!(t.get(next).is_some());
    }

    #[test]
    fn blobs_sit_in_the_queue_and_are_found_by_their_derived_numbers() {
        let mut t = Inodes::new();
        let (d, _) = t.intern(child(ROOT_INO, "d"), ROOT_INO, "d", staged(true), 1);
        t.hold(d);
        let blobs: Vec<Ino> = (0..20_000u32)
            .map(|i| {
                let name = format!("b{i}");
                let (b, _) = t.intern(blob_key(&i.to_le_bytes()), d, &name, staged(false), 2);
                t.hold(b);
                b
            })
            .collect();
        assert!(blobs.iter().all(|&b| b >= DERIVED));
        assert_eq!(t.slots.map.len(), 1, "only the root is in the map");
        assert_eq!(t.len(), 20_002);
        assert_eq!(t.path(blobs[7]), Some(vec!["d".into(), "b7".into()]));
        // Listing what is held names each blob by its derived number, once.
        let (names, _) = t.held_names(|n| *n == staged(true));
        assert_eq!(names.len(), 20_000);
        let numbers: std::collections::HashSet<Ino> = t.slots.iter().map(|(i, _)| i).collect();
        assert_eq!(numbers.len(), 20_002);
        assert!(blobs.iter().all(|b| numbers.contains(b)));
        // Forgotten, a blob comes back with its number; the places go.
        for &b in &blobs {
            t.forget(b, 1);
        }
        assert_eq!(t.len(), 2);
        assert!(t.slots.derived.is_empty() && t.slots.capacity() <= MIN_SHRINK * 3);
        let (again, _) = t.intern(blob_key(&7u32.to_le_bytes()), d, "b7", staged(false), 2);
        assert_eq!(again, blobs[7]);
        assert!(t.get(again).is_some());
    }

    /// A million held paths are a million slots: every byte counts.
    #[test]
    fn a_slot_stays_small() {
        assert!(std::mem::size_of::<Key>() <= 48);
        // The node inline (64: every node is as large as the largest, so
        // the large parts are shared or boxed: a repository's name, a view
        // folder's manifest, a layer file's path), and 64 besides: the
        // first key (a name of up to 22 bytes inline, `Name`), the counts,
        // and what the first key does not say behind one pointer (`More`,
        // for blobs and renamed inodes only).
        assert!(std::mem::size_of::<Node>() <= 64);
        assert!(std::mem::size_of::<Slot>() <= 64 + std::mem::size_of::<Node>());
        assert!(std::mem::size_of::<More>() <= 56);
    }

    #[test]
    fn a_name_is_held_once_and_a_key_only_in_its_slot() {
        let mut t = Inodes::new();
        let (d, _) = t.intern(child(ROOT_INO, "d"), ROOT_INO, "d", staged(true), 1);
        assert!(
            t.slots.get(&d).unwrap().more.is_none(),
            "the folder, the name and the links are the key's: nothing more kept"
        );
        assert_eq!(t.path(d), Some(vec!["d".to_string()]));
        let (b, _) = t.intern(blob_key(b"b"), d, "title", Node::Root, 2);
        let more = t.slots.get(&b).unwrap().more.as_ref().unwrap();
        assert_eq!(
            (more.name.as_deref(), more.parent, more.links),
            (Some("title"), d, 2)
        );
        let (b2, _) = t.intern(blob_key(b"b"), d, "other", Node::Root, 2);
        assert_eq!((b2, t.path(b)), (b, Some(vec!["d".into(), "other".into()])));
        // The index holds numbers only, each at its slot's first key.
        let stray = child(ROOT_INO, "stray");
        assert_eq!(t.by_key.get(&t.slots, &stray), None);
        let (s, _) = t.intern(stray.clone(), ROOT_INO, "stray", staged(false), 1);
        assert_ne!(s, d);
        assert_eq!(t.by_key.get(&t.slots, &stray), Some(s));
        assert_eq!(
            t.by_key.len(),
            t.slots.len() - 1,
            "every slot but the root's"
        );
        // Rebinding keeps the name though the key that held it went.
        t.rebind(d, blob_key(b"d"), staged(false));
        assert_eq!(t.path(d), Some(vec!["d".to_string()]));
    }

    #[test]
    fn the_index_finds_every_key_through_growth_merges_and_renames() {
        let mut t = Inodes::new();
        let name = |i: usize| format!("n{i}");
        let mut inos: Vec<Ino> = (0..100)
            .map(|i| {
                t.intern(
                    child(ROOT_INO, &name(i)),
                    ROOT_INO,
                    &name(i),
                    staged(false),
                    1,
                )
                .0
            })
            .collect();
        // Slots with two keys (the second in `extra`), and renamed ones.
        for i in 0..10 {
            t.merge_into(inos[i], inos[i + 50]);
            inos[i] = inos[i + 50];
        }
        for i in 20..30 {
            t.rename(
                child(ROOT_INO, &name(i)),
                child(ROOT_INO, &format!("m{i}")),
                ROOT_INO,
                "x",
            );
        }
        // A rename over another name takes the key from the inode that
        // held it: the name finds the renamed inode, and only it.
        t.rename(
            child(ROOT_INO, &name(40)),
            child(ROOT_INO, &name(41)),
            ROOT_INO,
            &name(41),
        );
        assert_eq!(
            t.by_key.get(&t.slots, &child(ROOT_INO, &name(41))),
            Some(inos[40])
        );
        assert!(!t
            .slots
            .get(&inos[41])
            .unwrap()
            .has_key(&child(ROOT_INO, &name(41))));
        // Growth rehashes every entry from its slot's first key.
        for i in 100..20_000 {
            t.intern(
                child(ROOT_INO, &name(i)),
                ROOT_INO,
                &name(i),
                staged(false),
                1,
            );
        }
        for (i, &ino) in inos.iter().enumerate().filter(|&(i, _)| i != 40 && i != 41) {
            let now = if (20..30).contains(&i) {
                format!("m{i}")
            } else {
                name(i)
            };
            assert_eq!(
                t.by_key.get(&t.slots, &child(ROOT_INO, &now)),
                Some(ino),
                "{now}"
            );
        }
        for i in 20..30 {
            assert_eq!(t.by_key.get(&t.slots, &child(ROOT_INO, &name(i))), None);
        }
        // Forgotten slots leave the index, which gives its room back.
        let all: Vec<Ino> = (0..20_000)
            .filter_map(|i| t.by_key.get(&t.slots, &child(ROOT_INO, &name(i))))
            .collect();
        for ino in all {
            t.remove(ino);
        }
        assert!(t.by_key.get(&t.slots, &child(ROOT_INO, "m25")).is_some());
        assert!(
            t.by_key.capacity() <= MIN_SHRINK * 2,
            "{}",
            t.by_key.capacity()
        );
    }

    #[test]
    fn rename_moves_the_path() {
        let mut t = Inodes::new();
        let (d, _) = t.intern(child(ROOT_INO, "d"), ROOT_INO, "d", staged(true), 1);
        let (f, _) = t.intern(child(d, ".f.tmp"), d, ".f.tmp", staged(false), 1);
        assert_eq!(t.path(f), Some(vec!["d".to_string(), ".f.tmp".to_string()]));
        t.rename(child(d, ".f.tmp"), child(ROOT_INO, "f"), ROOT_INO, "f");
        assert_eq!(t.path(f), Some(vec!["f".to_string()]));
        let (again, _) = t.intern(child(ROOT_INO, "f"), ROOT_INO, "f", staged(false), 1);
        assert_eq!(again, f);
        assert!(t.hold(f));
        t.forget(f, 1);
        let (new, _) = t.intern(child(ROOT_INO, "f"), ROOT_INO, "f", staged(false), 1);
        assert_ne!(new, f, "the renamed key went with the slot");
    }

    #[test]
    fn rebind_leaves_the_blob_key_for_the_other_names() {
        let mut t = Inodes::new();
        let key = blob_key(b"b");
        let (a, _) = t.intern(key.clone(), 7, "t", Node::Root, 2);
        t.rebind(a, child(7, "t"), staged(false));
        let (b, _) = t.intern(key, 9, "t", Node::Root, 2);
        assert_ne!(a, b);
        assert_eq!(*t.get(a).unwrap(), staged(false));
    }
}
