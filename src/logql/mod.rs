//! The LogQL the archive answers (`coldstore::query` evaluates it): log queries — a stream
//! selector (`= != =~ !~`), line filters (`|= != |~ !~`), `json` / `logfmt` / `regexp` /
//! `pattern`, label filters (string matchers, numeric comparisons, `and` / `or` / `,`),
//! `line_format` with `{{.label}}` — and metric queries: `count_over_time`, `rate`,
//! `bytes_over_time`, `bytes_rate`, `absent_over_time`; over `| unwrap label`: `sum_`, `avg_`,
//! `min_`, `max_`, `first_`, `last_`, `stddev_`, `stdvar_` and `quantile_over_time`, with an
//! optional `by|without (...)`; `sum / count / min / max / avg by|without (...)`,
//! `topk / bottomk`; arithmetic and comparisons between vectors and numbers. Anything else is
//! refused with an error naming the construct (the HTTP API answers 400 with it).

mod ast;
mod embedded;
mod lexer;
mod parser;
mod pipeline;
#[cfg(test)]
mod tests;

pub use ast::*;
pub use embedded::{log_query_in, parse_labels, selector_prefix};
pub use lexer::parse_duration;
pub use parser::{parse, parse_selector};
