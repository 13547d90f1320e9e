//! One declaration per ABI structure.
//!
//! [`abi_struct!`] turns a single list of `field: type => OFFSET_NAME = offset`
//! lines into the `#[repr(C)]` structure, the public byte-offset constants
//! code uses to touch one field of a structure that lives in shared memory,
//! little-endian `to_bytes`/`from_bytes`/`from_slice`, and compile-time checks
//! that the declared offsets and size are exactly what the C layout gives.
//! A field is named once; nothing can drift.

/// A field type with a fixed little-endian wire encoding.
pub trait LeField: Copy {
    /// Reads the field at `off` of `b` (the caller's layout guarantees room).
    fn get(b: &[u8], off: usize) -> Self;
    /// Writes the field at `off` of `b`.
    fn put(self, b: &mut [u8], off: usize);
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl LeField for $t {
            fn get(b: &[u8], off: usize) -> Self {
                const N: usize = core::mem::size_of::<$t>();
                let mut a = [0u8; N];
                a.copy_from_slice(&b[off..off + N]);
                <$t>::from_le_bytes(a)
            }
            fn put(self, b: &mut [u8], off: usize) {
                let a = self.to_le_bytes();
                b[off..off + a.len()].copy_from_slice(&a);
            }
        }
    )*};
}

le_int!(u8, i8, u16, u32, i32, u64);

impl<const N: usize> LeField for [u8; N] {
    fn get(b: &[u8], off: usize) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[off..off + N]);
        a
    }
    fn put(self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(&self);
    }
}

/// Declares an ABI structure once:
///
/// ```ignore
/// abi_struct! {
///     /// doc
///     pub struct Name: size 16, repr(C, align(8)) {
///         /// doc
///         field: u32 => NAME_FIELD = 0,
///     }
/// }
/// ```
///
/// Padding bytes encode as zero and are ignored when decoding.
macro_rules! abi_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident : size $size:literal, repr($($repr:tt)*) {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty => $off_name:ident = $off:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[repr($($repr)*)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        $(
            #[doc = concat!("Byte offset of `", stringify!($name), "::", stringify!($field), "`.")]
            pub const $off_name: usize = $off;
        )*

        const _: () = {
            assert!(core::mem::size_of::<$name>() == $size);
            $( assert!(core::mem::offset_of!($name, $field) == $off); )*
        };

        impl $name {
            /// Size on the wire.
            pub const SIZE: usize = $size;

            /// Little-endian encoding (padding bytes are zero).
            #[must_use]
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut b = [0u8; $size];
                $( $crate::abi::layout::LeField::put(self.$field, &mut b, $off); )*
                b
            }

            /// Decodes the little-endian encoding.
            #[must_use]
            pub fn from_bytes(b: &[u8; $size]) -> Self {
                Self { $( $field: $crate::abi::layout::LeField::get(b, $off), )* }
            }

            /// Decodes the first [`Self::SIZE`] bytes of `b`, if it has that many.
            #[must_use]
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                b.get(..$size)?.try_into().ok().map(Self::from_bytes)
            }
        }
    };
}

pub(crate) use abi_struct;
