//! A small macro generating typed bit-field accessors on register newtypes.

/// Generates, for a tuple newtype over an unsigned integer, a getter
/// `name()`, a setter `set_name()` and a builder `with_name()` per field.
///
/// Each field is `name: Type @ lo..=hi` with `Type` one of `bool`, `u8`,
/// `u16`, `u32`, `u64`; setters silently mask values that do not fit.
macro_rules! bitfields {
    ($ty:ident : $raw:ty { $( $(#[$m:meta])* $name:ident, $set:ident, $with:ident : $fty:tt @ $lo:literal ..= $hi:literal ; )* }) => {
        impl $ty {
            $(
                $(#[$m])*
                #[inline]
                pub fn $name(&self) -> $fty {
                    let width = $hi - $lo + 1;
                    let mask: $raw = if width >= <$raw>::BITS { <$raw>::MAX } else { ((1 as $raw) << width) - 1 };
                    bitfields!(@from $fty, (self.0 >> $lo) & mask)
                }
                #[doc = concat!("Sets the `", stringify!($name), "` field (bits ", stringify!($lo), "..=", stringify!($hi), ").")]
                #[inline]
                pub fn $set(&mut self, value: $fty) {
                    let width = $hi - $lo + 1;
                    let mask: $raw = if width >= <$raw>::BITS { <$raw>::MAX } else { ((1 as $raw) << width) - 1 };
                    let v = (bitfields!(@to $fty, value) as $raw) & mask;
                    self.0 = (self.0 & !(mask << $lo)) | (v << $lo);
                }
                #[doc = concat!("Returns a copy with the `", stringify!($name), "` field set.")]
                #[inline]
                #[must_use]
                pub fn $with(mut self, value: $fty) -> Self {
                    self.$set(value);
                    self
                }
            )*
        }
    };
    (@from bool, $e:expr) => { ($e) != 0 };
    (@from $t:ty, $e:expr) => { ($e) as $t };
    (@to bool, $e:expr) => { u64::from($e) };
    (@to $t:ty, $e:expr) => { ($e) };
}
