//! One definition per counter set: the index constants, `COUNT` and the `NAMES` used in the
//! JSON all come from a single list, so they cannot drift apart.

/// Define a module of counter indices.
///
/// ```ignore
/// counter_set! {
///     /// Per resolver.
///     pub mod dns_counter {
///         /// A query.
///         QUERIES = "queries",
///         RESPONSES = "responses",
///     }
/// }
/// ```
/// gives `dns_counter::QUERIES == 0`, `dns_counter::COUNT == 2` and
/// `dns_counter::NAMES == ["queries", "responses"]`.
#[macro_export]
macro_rules! counter_set {
    ($(#[$meta:meta])* $vis:vis mod $module:ident { $( $(#[$doc:meta])* $name:ident = $text:literal ),+ $(,)? }) => {
        $(#[$meta])*
        $vis mod $module {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]
            #[repr(usize)]
            enum Index { $($name),+ }
            $( $(#[$doc])* pub const $name: usize = Index::$name as usize; )+
            /// How many counters the set has.
            pub const COUNT: usize = NAMES.len();
            /// JSON names, in index order.
            pub const NAMES: [&str; [$($text),+].len()] = [$($text),+];
        }
    };
}

#[cfg(test)]
mod tests {
    counter_set! {
        mod sample {
            FIRST = "first",
            /// Documented.
            SECOND = "second",
            THIRD = "third",
        }
    }

    #[test]
    fn indices_follow_the_list_and_names_match() {
        assert_eq!((sample::FIRST, sample::SECOND, sample::THIRD, sample::COUNT), (0, 1, 2, 3));
        assert_eq!(sample::NAMES[sample::SECOND], "second");
    }
}
