//! Shape of the served tree and its stable inode numbers.

use std::borrow::Cow;

use fuser::INodeNo;
use mic_core::host::sysfs::parse_card_name;

use super::{Backend, Tree};

/// A node of the served tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// The mount point (`sys`).
    Root,
    /// `class`.
    Class,
    /// `class/mic`.
    ClassMic,
    /// `kernel`.
    Kernel,
    /// `kernel/debug`.
    KernelDebug,
    /// `kernel/debug/mic_host`.
    MicHost,
    /// `class/mic/micN` or `kernel/debug/mic_host/micN`.
    Card(Tree, u32),
    /// A file of a card directory: index into [`Backend::files`].
    File(Tree, u32, usize),
}

// Inode layout: fixed directories are 1..=6; card nodes are
// (tree tag << 48) | (card << 16) | slot, where slot 0 is the card directory
// and slot i + 1 is file i.
const TAG_SHIFT: u32 = 48;
const CARD_SHIFT: u32 = 16;
const SLOT_MASK: u64 = (1 << CARD_SHIFT) - 1;
const CARD_MASK: u64 = (1 << (TAG_SHIFT - CARD_SHIFT)) - 1;

fn tag(tree: Tree) -> u64 {
    match tree {
        Tree::Sysfs => 1,
        Tree::Debugfs => 2,
    }
}

impl Node {
    pub(crate) fn ino(self) -> INodeNo {
        INodeNo(match self {
            Node::Root => INodeNo::ROOT.0,
            Node::Class => 2,
            Node::ClassMic => 3,
            Node::Kernel => 4,
            Node::KernelDebug => 5,
            Node::MicHost => 6,
            Node::Card(tree, card) => (tag(tree) << TAG_SHIFT) | (u64::from(card) << CARD_SHIFT),
            Node::File(tree, card, idx) => {
                (tag(tree) << TAG_SHIFT) | (u64::from(card) << CARD_SHIFT) | (idx as u64 + 1)
            }
        })
    }

    /// The node with inode `ino`, if it exists for this backend.
    pub(crate) fn from_ino(ino: INodeNo, backend: &dyn Backend) -> Option<Node> {
        let node = match ino.0 {
            1 => Node::Root,
            2 => Node::Class,
            3 => Node::ClassMic,
            4 => Node::Kernel,
            5 => Node::KernelDebug,
            6 => Node::MicHost,
            n => {
                let tree = match n >> TAG_SHIFT {
                    1 => Tree::Sysfs,
                    2 => Tree::Debugfs,
                    _ => return None,
                };
                let card = ((n >> CARD_SHIFT) & CARD_MASK) as u32;
                if card >= backend.card_count() {
                    return None;
                }
                match (n & SLOT_MASK) as usize {
                    0 => Node::Card(tree, card),
                    slot if slot <= backend.files(tree).len() => Node::File(tree, card, slot - 1),
                    _ => return None,
                }
            }
        };
        Some(node)
    }

    /// Whether the node is debugfs or below it (`kernel/debug` is its
    /// mount point): root's only.
    pub(crate) fn in_debugfs(self) -> bool {
        matches!(
            self,
            Node::KernelDebug | Node::MicHost | Node::Card(Tree::Debugfs, _) | Node::File(Tree::Debugfs, ..)
        )
    }

    pub(crate) fn is_dir(self) -> bool {
        !matches!(self, Node::File(..))
    }

    pub(crate) fn parent(self) -> Node {
        match self {
            Node::Root | Node::Class | Node::Kernel => Node::Root,
            Node::ClassMic => Node::Class,
            Node::KernelDebug => Node::Kernel,
            Node::MicHost => Node::KernelDebug,
            Node::Card(Tree::Sysfs, _) => Node::ClassMic,
            Node::Card(Tree::Debugfs, _) => Node::MicHost,
            Node::File(tree, card, _) => Node::Card(tree, card),
        }
    }

    /// Children of a directory in listing order (empty for files).
    pub(crate) fn children(self, backend: &dyn Backend) -> Vec<(Cow<'static, str>, Node)> {
        let cards = |tree| {
            (0..backend.card_count())
                .map(|n| (Cow::Owned(format!("mic{n}")), Node::Card(tree, n)))
                .collect()
        };
        match self {
            Node::Root => vec![
                (Cow::Borrowed("class"), Node::Class),
                (Cow::Borrowed("kernel"), Node::Kernel),
            ],
            Node::Class => vec![(Cow::Borrowed("mic"), Node::ClassMic)],
            Node::Kernel => vec![(Cow::Borrowed("debug"), Node::KernelDebug)],
            Node::KernelDebug => vec![(Cow::Borrowed("mic_host"), Node::MicHost)],
            Node::ClassMic => cards(Tree::Sysfs),
            Node::MicHost => cards(Tree::Debugfs),
            Node::Card(tree, card) => backend
                .files(tree)
                .iter()
                .enumerate()
                .map(|(i, f)| (Cow::Borrowed(f.name), Node::File(tree, card, i)))
                .collect(),
            Node::File(..) => Vec::new(),
        }
    }

    /// The child of a directory called `name`.
    pub(crate) fn child(self, name: &[u8], backend: &dyn Backend) -> Option<Node> {
        match self {
            Node::ClassMic | Node::MicHost => {
                let tree = if self == Node::ClassMic {
                    Tree::Sysfs
                } else {
                    Tree::Debugfs
                };
                // Exactly the canonical spelling: no sign, no leading zeros.
                let card = parse_card_name(std::str::from_utf8(name).ok()?)?;
                (card < backend.card_count()).then_some(Node::Card(tree, card))
            }
            Node::Card(tree, card) => backend
                .files(tree)
                .iter()
                .position(|f| f.name.as_bytes() == name)
                .map(|i| Node::File(tree, card, i)),
            _ => self
                .children(backend)
                .into_iter()
                .find(|(n, _)| n.as_bytes() == name)
                .map(|(_, node)| node),
        }
    }

    /// Number of subdirectories (for `nlink` of directories).
    pub(crate) fn subdirs(self, backend: &dyn Backend) -> u32 {
        match self {
            Node::Root => 2,
            Node::Class | Node::Kernel | Node::KernelDebug => 1,
            Node::ClassMic | Node::MicHost => backend.card_count(),
            Node::Card(..) | Node::File(..) => 0,
        }
    }
}
