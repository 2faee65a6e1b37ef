//! What a [`KeyRecord`](crate::KeyRecord) carries for the layer that reads it: the
//! layer's state for the key, reached through the record the store already found, so a
//! request makes one map lookup, not two. The store holds the cell and never looks inside;
//! the layer fills it. Neither knows the other.

use std::{
    any::Any,
    fmt,
    sync::{Arc, OnceLock},
};

/// Empty until one owner attaches a value; the copy of a record starts empty.
#[derive(Default)]
pub(crate) struct Attachment(OnceLock<(u64, Arc<dyn Any + Send + Sync>)>);

impl Attachment {
    /// The value `owner` attached, if it did and it is a `T`.
    pub(crate) fn get<T: Any>(&self, owner: u64) -> Option<&T> {
        let (by, value) = self.0.get()?;
        if *by == owner {
            value.downcast_ref()
        } else {
            None
        }
    }

    /// Attaches `value` for `owner`, unless a value is attached already.
    pub(crate) fn attach(&self, owner: u64, value: Arc<dyn Any + Send + Sync>) {
        let _ = self.0.set((owner, value));
    }
}

/// A copied record is a new record: nothing attached yet.
impl Clone for Attachment {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Records are equal by their fields; what a layer attached is none of them.
impl PartialEq for Attachment {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Attachment {}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}
