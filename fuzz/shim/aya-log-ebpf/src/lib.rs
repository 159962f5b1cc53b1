//! aya-log's kernel macros for the host build: the format string and its arguments are still
//! checked by the compiler, nothing is logged.

#[macro_export]
macro_rules! log_nothing {
    ($ctx:expr, $($arg:tt)+) => {{
        let _ = &$ctx;
        let _ = format_args!($($arg)+);
    }};
}

#[macro_export]
macro_rules! error {
    ($($t:tt)+) => { $crate::log_nothing!($($t)+) };
}

#[macro_export]
macro_rules! warn {
    ($($t:tt)+) => { $crate::log_nothing!($($t)+) };
}

#[macro_export]
macro_rules! info {
    ($($t:tt)+) => { $crate::log_nothing!($($t)+) };
}

#[macro_export]
macro_rules! debug {
    ($($t:tt)+) => { $crate::log_nothing!($($t)+) };
}
