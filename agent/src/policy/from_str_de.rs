//! One way for every policy value type to be read from YAML: through its `FromStr`, so that
//! a bad value's error carries the parser's line and column.

/// Deserializes a `FromStr` type from a YAML string (or, for ports, an integer), so that its
/// error carries the parser's location.
macro_rules! deserialize_from_str {
    ($ty:ty, $what:literal) => {
        deserialize_from_str!(@impl $ty, $what,);
    };
    // Numbers such as `sigmas: 3.5` arrive as floats.
    ($ty:ty, $what:literal, float) => {
        deserialize_from_str!(@impl $ty, $what,
            fn visit_f64<E: ::serde::de::Error>(self, n: f64) -> Result<$ty, E> {
                n.to_string().parse().map_err(E::custom)
            }
        );
    };
    (@impl $ty:ty, $what:literal, $($extra:tt)*) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: ::serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: ::serde::de::Error>(self, n: u64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: ::serde::de::Error>(self, n: i64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                    $($extra)*
                }
                d.deserialize_any(V)
            }
        }
    };
}

pub(crate) use deserialize_from_str;
