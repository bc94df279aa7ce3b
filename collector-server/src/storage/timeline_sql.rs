//! The timeline's queries in SQL, shared by every SQL back end ([`super::sqlite`],
//! [`super::postgres`]): a [`Filter`] and its [`Cond`] compiled to a `WHERE` clause whose
//! values are bound, never spliced, the statements built on it, and the mapping of a stored row
//! back to a [`StoredEvent`]. What differs between the dialects is a [`Dialect`]: how a
//! parameter is written, how text is compared byte for byte, and how a uid is read from the
//! attributes.

use super::timeline::{
    Column, Cond, Cursor, Event, Facets, Filter, Match, StoredEvent, FACET_SCAN_MAX, FACET_TOP,
};
use std::collections::HashMap;

/// A bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// What one SQL dialect writes differently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// The parameter mark before its 1-based number: `?` (SQLite) or `$` (PostgreSQL).
    pub mark: char,
    /// Appended to an ordering by a computed text so that it sorts as bytes (SQLite's `BINARY`
    /// is that; PostgreSQL's text columns are `COLLATE "C"`, an expression may not be).
    pub collate: &'static str,
    /// A user given as a uid: the attributes' `uid` is that text (`?U` is the parameter).
    pub attr_uid: &'static str,
    /// Case-insensitive `LIKE`: SQLite's `LIKE` folds ASCII only, as PostgreSQL's `ILIKE`
    /// does under the "C" collation.
    pub contains: &'static str,
    /// A sub-select in `FROM` needs an alias in PostgreSQL.
    pub alias: &'static str,
    /// With the hosts' numbers known, bound time by `(host, time_ns)` row comparisons, not
    /// `time_ns` alone. PostgreSQL's planner prefers the one-column `(time_ns)` index for a
    /// host's hour (time is nearly in heap order, hosts interleave) and filters 19 rows in 20
    /// away; a row comparison only the `(host, time_ns, dedup)` index can serve forces the exact
    /// range (211 ms → 13 ms at 2 M events, BENCHMARKS.md).
    pub host_time_rows: bool,
}

pub(crate) const SQLITE: Dialect = Dialect {
    mark: '?',
    collate: "",
    attr_uid: "json_extract(attrs, '$.uid') = ?U",
    contains: "LIKE",
    alias: "",
    host_time_rows: false,
};

pub(crate) const POSTGRES: Dialect = Dialect {
    mark: '$',
    collate: " COLLATE \"C\"",
    // `->` keeps the JSON type: a numeric uid is not the text "0", as in SQLite.
    attr_uid: "(attrs::jsonb -> 'uid') = to_jsonb(?U::text)",
    contains: "ILIKE",
    alias: " AS m",
    host_time_rows: true,
};

/// The columns of a stored row, in the order [`stored_event`] reads them.
pub(crate) const ROW_COLS: &str = "id, time_ns, (SELECT host_id FROM timeline_hosts WHERE n = host), source, kind, pid, ppid, exe, argv, \"user\", container, pod, message, attrs, path, item_id, dedup, parent_exe, dst_addr, dst_port, time_source";

/// A query's text and the values it binds, numbered in order.
pub(crate) struct Query {
    pub d: Dialect,
    pub params: Vec<Value>,
    /// The hosts' small numbers when the caller looked them up first: the planner then sees
    /// `host IN (3)` and its statistics, not a sub-select it cannot see into.
    pub hosts: Option<HashMap<String, i64>>,
}

impl Query {
    pub fn new(d: Dialect) -> Query {
        Query {
            d,
            params: Vec::new(),
            hosts: None,
        }
    }

    /// Bind a value; returns its mark.
    pub fn bind(&mut self, v: Value) -> String {
        self.params.push(v);
        format!("{}{}", self.d.mark, self.params.len())
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Value::Text(s.to_string()))
    }

    /// `host IN (…)`: the hosts' small numbers by their agent ids.
    fn hosts_in(&mut self, ids: &[String]) -> String {
        if let Some(known) = &self.hosts {
            let numbers: Vec<i64> = ids.iter().filter_map(|h| known.get(h).copied()).collect();
            if numbers.is_empty() {
                return "FALSE".into();
            }
            let marks: Vec<String> = numbers
                .into_iter()
                .map(|n| self.bind(Value::Int(n)))
                .collect();
            return format!("host IN ({})", marks.join(","));
        }
        let marks: Vec<String> = ids.iter().map(|h| self.text(h)).collect();
        format!(
            "host IN (SELECT n FROM timeline_hosts WHERE host_id IN ({}))",
            marks.join(",")
        )
    }

    /// The hosts' numbers, when the time of the filter is better bound per host
    /// ([`Dialect::host_time_rows`]): a few known hosts and a time bound or a cursor.
    fn host_time_rows(&self, f: &Filter, after: Option<Cursor>) -> Option<Vec<i64>> {
        const MAX_HOSTS: usize = 16;
        if !self.d.host_time_rows
            || f.host_ids.is_empty()
            || f.host_ids.len() > MAX_HOSTS
            || (f.from_ns.is_none() && f.to_ns.is_none() && after.is_none())
        {
            return None;
        }
        let known = self.hosts.as_ref()?;
        let mut numbers: Vec<i64> = f
            .host_ids
            .iter()
            .filter_map(|h| known.get(h).copied())
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        Some(numbers)
    }

    /// `(host = h AND (host, time_ns) >= (h, from) AND (host, time_ns) <= (h, to)) OR …`, the
    /// cursor's time folded into the bounds.
    fn hosts_time_rows(&mut self, numbers: &[i64], f: &Filter, after: Option<Cursor>) -> String {
        if numbers.is_empty() {
            return "FALSE".into();
        }
        let mut lo = f.from_ns;
        let mut hi = f.to_ns;
        if let Some(c) = after {
            if f.newest_first {
                hi = Some(hi.map_or(c.time_ns, |h| h.min(c.time_ns)));
            } else {
                lo = Some(lo.map_or(c.time_ns, |l| l.max(c.time_ns)));
            }
        }
        let parts: Vec<String> = numbers
            .iter()
            .map(|n| {
                let h = self.bind(Value::Int(*n));
                let mut p = vec![format!("host = {h}")];
                if let Some(t) = lo {
                    p.push(format!(
                        "(host, time_ns) >= ({h}, {})",
                        self.bind(Value::Int(t))
                    ));
                }
                if let Some(t) = hi {
                    p.push(format!(
                        "(host, time_ns) <= ({h}, {})",
                        self.bind(Value::Int(t))
                    ));
                }
                format!("({})", p.join(" AND "))
            })
            .collect();
        format!("({})", parts.join(" OR "))
    }

    fn user_or_uid(&mut self, u: &str) -> String {
        let m = self.text(u);
        format!("(\"user\" = {m} OR {})", self.d.attr_uid.replace("?U", &m))
    }

    /// A prefix on an exact range stays an index-friendly comparison.
    fn prefix_range(&mut self, name: &str, v: &str) -> String {
        let lo = self.text(v);
        let hi = self.text(&format!("{v}\u{10ffff}"));
        format!("({name} >= {lo} AND {name} < {hi})")
    }

    fn contains(&mut self, expr: &str, v: &str) -> String {
        let m = self.text(&format!("%{}%", like_escape(v)));
        format!("{expr} {} {m} ESCAPE '\\'", self.d.contains)
    }

    /// `WHERE` clause for a filter (and an optional cursor); empty when nothing is filtered.
    pub fn where_clause(&mut self, f: &Filter, after: Option<Cursor>) -> String {
        let mut w: Vec<String> = Vec::new();
        let by_rows = self.host_time_rows(f, after);
        if let Some(numbers) = &by_rows {
            w.push(self.hosts_time_rows(numbers, f, after));
        } else {
            if !f.host_ids.is_empty() {
                w.push(self.hosts_in(&f.host_ids));
            }
            if let Some(t) = f.from_ns {
                w.push(format!("time_ns >= {}", self.bind(Value::Int(t))));
            }
            if let Some(t) = f.to_ns {
                w.push(format!("time_ns <= {}", self.bind(Value::Int(t))));
            }
        }
        if !f.kinds.is_empty() {
            let marks: Vec<String> = f.kinds.iter().map(|k| self.text(k)).collect();
            w.push(format!("kind IN ({})", marks.join(",")));
        }
        if let Some(u) = &f.user {
            w.push(self.user_or_uid(u));
        }
        if let Some(c) = &f.container {
            w.push(self.prefix_range("container", c));
        }
        if let Some(s) = &f.source {
            w.push(format!("source = {}", self.text(s)));
        }
        if let Some(t) = &f.text {
            w.push(self.contains("message", t));
        }
        if let Some(c) = &f.cond {
            w.push(self.compile(c));
        }
        if let Some(c) = after {
            let t = self.bind(Value::Int(c.time_ns));
            let id = self.bind(Value::Int(c.id));
            // With row comparisons the cursor's time bound is already in them.
            let bound = if by_rows.is_some() {
                String::new()
            } else if f.newest_first {
                format!("time_ns <= {t} AND ")
            } else {
                format!("time_ns >= {t} AND ")
            };
            if f.newest_first {
                w.push(format!("{bound}(time_ns < {t} OR id < {id})"));
            } else {
                w.push(format!("{bound}(time_ns > {t} OR id > {id})"));
            }
        }
        if w.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", w.join(" AND "))
        }
    }

    /// SQL for a condition of the query language.
    pub fn compile(&mut self, c: &Cond) -> String {
        match c {
            Cond::All(cs) if cs.is_empty() => "TRUE".into(),
            Cond::Any(cs) if cs.is_empty() => "FALSE".into(),
            Cond::All(cs) | Cond::Any(cs) => {
                let op = if matches!(c, Cond::All(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = cs.iter().map(|c| self.compile(c)).collect();
                format!("({})", parts.join(op))
            }
            Cond::Not(c) => format!("NOT COALESCE({}, FALSE)", self.compile(c)),
            Cond::Is(Column::Host, m) => {
                let ids: Vec<String> = match m {
                    Match::OneOf(v) => v.clone(),
                    Match::Is(v) | Match::Prefix(v) | Match::Contains(v) => vec![v.clone()],
                };
                self.hosts_in(&ids)
            }
            // A user is a name or a uid (sensor events carry both).
            Cond::Is(Column::User, Match::Is(v)) => self.user_or_uid(v),
            Cond::Is(Column::User, Match::OneOf(vs)) => {
                let parts: Vec<String> = vs.iter().map(|v| self.user_or_uid(v)).collect();
                format!("({})", parts.join(" OR "))
            }
            Cond::Is(col, m) => {
                let name = col.sql();
                let value = |v: &str| -> Value {
                    if col.is_numeric() {
                        v.parse::<i64>().map(Value::Int).unwrap_or(Value::Null)
                    } else {
                        Value::Text(v.to_string())
                    }
                };
                match m {
                    Match::Is(v) => format!("{name} = {}", self.bind(value(v))),
                    Match::OneOf(vs) => {
                        let marks: Vec<String> = vs.iter().map(|v| self.bind(value(v))).collect();
                        format!("{name} IN ({})", marks.join(","))
                    }
                    Match::Prefix(v) if !col.is_numeric() => self.prefix_range(name, v),
                    Match::Prefix(v) | Match::Contains(v) => {
                        self.contains(&format!("CAST({name} AS TEXT)"), v)
                    }
                }
            }
        }
    }

    /// A page of rows after a cursor; one more than `limit` tells whether there is a next.
    pub fn page(&mut self, f: &Filter, after: Option<Cursor>, limit: u32) -> String {
        let w = self.where_clause(f, after);
        let l = self.bind(Value::Int(i64::from(limit) + 1));
        let order = if f.newest_first {
            "time_ns DESC, id DESC"
        } else {
            "time_ns, id"
        };
        format!("SELECT {ROW_COLS} FROM timeline {w} ORDER BY {order} LIMIT {l}")
    }

    /// Every value of a column among the first [`FACET_SCAN_MAX`] matching rows, most
    /// frequent first: `(value, count)`.
    pub fn values(&mut self, f: &Filter, column: Column, offset: u32, limit: u32) -> String {
        let w = self.where_clause(f, None);
        let col = match column {
            Column::Host => "(SELECT host_id FROM timeline_hosts WHERE n = host)".to_string(),
            c => format!("CAST({} AS TEXT)", c.sql()),
        };
        let l = self.bind(Value::Int(i64::from(limit)));
        let o = self.bind(Value::Int(i64::from(offset)));
        format!(
            "SELECT v, COUNT(*) FROM (SELECT {col} AS v FROM timeline {w} LIMIT {FACET_SCAN_MAX}){} WHERE v IS NOT NULL
             GROUP BY v ORDER BY COUNT(*) DESC, v{} LIMIT {l} OFFSET {o}",
            self.d.alias, self.d.collate
        )
    }

    /// The least (or most) frequent values of a column: `(value, events, hosts)`.
    pub fn stack(&mut self, f: &Filter, column: Column, rarest_first: bool, limit: u32) -> String {
        let w = self.where_clause(f, None);
        let col = format!("CAST({} AS TEXT)", column.sql());
        let and = if w.is_empty() { "WHERE" } else { "AND" };
        let l = self.bind(Value::Int(i64::from(limit.clamp(1, 10_000))));
        let order = if rarest_first { "ASC" } else { "DESC" };
        format!(
            "SELECT {col} AS v, COUNT(*), COUNT(DISTINCT host) FROM timeline {w} {and} {} IS NOT NULL
             GROUP BY v ORDER BY COUNT(DISTINCT host) {order}, COUNT(*) {order}, {col}{} LIMIT {l}",
            column.sql(),
            self.d.collate
        )
    }

    /// The distinct values of one column (or a pair) on each host among the matching rows:
    /// `(host id, a, b, events)`, at most `limit` + 1 rows so the caller sees truncation.
    pub fn host_values(&mut self, f: &Filter, a: Column, b: Option<Column>, limit: u32) -> String {
        let w = self.where_clause(f, None);
        let and = if w.is_empty() { "WHERE" } else { "AND" };
        let ca = format!("CAST({} AS TEXT)", a.sql());
        let (cb, b_not_null) = match b {
            Some(b) => (
                format!("CAST({} AS TEXT)", b.sql()),
                format!(" AND {} IS NOT NULL", b.sql()),
            ),
            None => ("CAST(NULL AS TEXT)".to_string(), String::new()),
        };
        let l = self.bind(Value::Int(i64::from(limit) + 1));
        format!(
            "SELECT (SELECT host_id FROM timeline_hosts WHERE n = t.host), t.a, t.b, t.c FROM
             (SELECT host, {ca} AS a, {cb} AS b, COUNT(*) AS c FROM timeline {w} {and} {} IS NOT NULL{b_not_null}
              GROUP BY host, {ca}, {cb} LIMIT {l}) t",
            a.sql()
        )
    }

    /// The earliest and latest time among the matching rows.
    pub fn span(&mut self, f: &Filter) -> String {
        let w = self.where_clause(f, None);
        format!("SELECT MIN(time_ns), MAX(time_ns) FROM timeline {w}")
    }

    /// The `n` rows before (or after) a row of a host, nearest first.
    pub fn context(&mut self, host: i64, t: i64, id: i64, n: i64, before: bool) -> String {
        let h = self.bind(Value::Int(host));
        let t = self.bind(Value::Int(t));
        let id = self.bind(Value::Int(id));
        let n = self.bind(Value::Int(n));
        let (cmp, strict, order) = if before {
            ("<=", "<", "DESC")
        } else {
            (">=", ">", "ASC")
        };
        format!(
            "SELECT {ROW_COLS} FROM timeline WHERE host = {h} AND time_ns {cmp} {t} AND (time_ns {strict} {t} OR id {strict} {id})
             ORDER BY time_ns {order}, id {order} LIMIT {n}"
        )
    }
}

/// A page from `limit + 1` rows: the first `limit`, and the cursor after them when there were
/// more.
pub(crate) fn page_of(
    mut rows: Vec<StoredEvent>,
    limit: u32,
) -> (Vec<StoredEvent>, Option<Cursor>) {
    if rows.len() <= limit as usize {
        return (rows, None);
    }
    rows.truncate(limit as usize);
    let next = rows.last().map(|r| Cursor {
        time_ns: r.event.time_ns,
        id: r.id,
    });
    (rows, next)
}

/// A histogram's bucket width and each bucket's inclusive range: `[from + i·width, +width)`,
/// the last one up to `to_ns` itself (it takes the remainder). 1 to 1000 buckets.
pub(crate) fn buckets(from_ns: i64, to_ns: i64, buckets: u32) -> (i64, Vec<(i64, i64)>) {
    let buckets = buckets.clamp(1, 1000);
    let span = to_ns.saturating_sub(from_ns).max(1);
    let bucket_ns = (span / i64::from(buckets)).max(1);
    let ranges = (0..buckets)
        .map(|i| {
            let lo = from_ns.saturating_add(bucket_ns.saturating_mul(i64::from(i)));
            let hi = if i + 1 == buckets {
                to_ns
            } else {
                lo.saturating_add(bucket_ns).saturating_sub(1)
            };
            (lo, hi)
        })
        .collect();
    (bucket_ns, ranges)
}

/// Every agent id a filter names (its hosts, and the hosts of its condition).
pub(crate) fn host_ids(f: &Filter) -> Vec<String> {
    fn walk(c: &Cond, out: &mut Vec<String>) {
        match c {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| walk(c, out)),
            Cond::Not(c) => walk(c, out),
            Cond::Is(Column::Host, Match::OneOf(v)) => out.extend(v.iter().cloned()),
            Cond::Is(Column::Host, Match::Is(v) | Match::Prefix(v) | Match::Contains(v)) => {
                out.push(v.clone())
            }
            Cond::Is(..) => {}
        }
    }
    let mut out = f.host_ids.clone();
    if let Some(c) = &f.cond {
        walk(c, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn like_escape(t: &str) -> String {
    t.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The columns of a stored row as a back end reads them.
pub(crate) trait RowRead {
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
    fn text(&self, i: usize) -> Result<Option<String>, String>;

    fn need_int(&self, i: usize) -> Result<i64, String> {
        self.int(i)?.ok_or_else(|| format!("column {i} is NULL"))
    }
    fn need_text(&self, i: usize) -> Result<String, String> {
        self.text(i)?.ok_or_else(|| format!("column {i} is NULL"))
    }
}

/// A row of [`ROW_COLS`]. The JSON columns are read leniently: what no longer parses is empty.
pub(crate) fn stored_event(r: &impl RowRead) -> Result<StoredEvent, String> {
    Ok(StoredEvent {
        id: r.need_int(0)?,
        host_id: r.need_text(2)?,
        item_id: r.text(15)?,
        event: Event {
            time_ns: r.need_int(1)?,
            source: r.need_text(3)?,
            kind: r.need_text(4)?,
            pid: r.int(5)?,
            ppid: r.int(6)?,
            exe: r.text(7)?,
            argv: r.text(8)?.and_then(|a| serde_json::from_str(&a).ok()),
            user: r.text(9)?,
            container: r.text(10)?,
            pod: r.text(11)?,
            message: r.need_text(12)?,
            attrs: r
                .text(13)?
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
            path: r.text(14)?,
            dedup: r.need_int(16)?,
            parent_exe: r.text(17)?,
            dst_addr: r.text(18)?,
            dst_port: r.int(19)?,
            time_source: r.text(20)?,
        },
    })
}

/// The columns facets count, after the host, in the order of [`facets`]' arguments.
pub(crate) const FACET_COLS: &str =
    "kind, \"user\", container, source, exe, parent_exe, dst_addr, CAST(dst_port AS TEXT), pod";

/// Counts of values per facet column (kind, user, container, source, exe, parent, dst,
/// dst_port, pod).
pub(crate) type FacetCounts = [HashMap<String, u64>; 9];

/// The facets from counts over the first `total` matching rows (at most [`FACET_SCAN_MAX`]).
pub(crate) fn facets(total: u64, host: HashMap<String, u64>, counts: FacetCounts) -> Facets {
    let top = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(FACET_TOP);
        v
    };
    let [kind, user, container, source, exe, parent, dst, dst_port, pod] = counts;
    Facets {
        exact: total < FACET_SCAN_MAX,
        total,
        host: top(host),
        kind: top(kind),
        user: top(user),
        container: top(container),
        source: top(source),
        exe: top(exe),
        parent: top(parent),
        dst: top(dst),
        dst_port: top(dst_port),
        pod: top(pod),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dialects_differ_in_marks_and_collation_only() {
        let f = Filter {
            container: Some("4c01".into()),
            text: Some("a%b".into()),
            cond: Some(Cond::Not(Box::new(Cond::Is(
                Column::User,
                Match::Is("0".into()),
            )))),
            ..Default::default()
        };
        let mut s = Query::new(SQLITE);
        let w = s.where_clause(&f, None);
        assert!(w.contains("container >= ?1 AND container < ?2"), "{w}");
        assert!(w.contains("message LIKE ?3"), "{w}");
        let mut p = Query::new(POSTGRES);
        let w = p.where_clause(&f, None);
        assert!(w.contains("container >= $1 AND container < $2"), "{w}");
        assert!(w.contains("message ILIKE $3"), "{w}");
        assert!(w.contains("to_jsonb($4::text)"), "{w}");
        assert_eq!(s.params, p.params);
        assert_eq!(p.params[2], Value::Text("%a\\%b%".into()));
    }

    #[test]
    fn a_known_hosts_time_is_bound_by_row_comparisons_on_postgres_only() {
        let f = Filter {
            host_ids: vec!["b".into(), "a".into()],
            from_ns: Some(10),
            to_ns: Some(90),
            newest_first: true,
            ..Default::default()
        };
        let cursor = Some(Cursor { time_ns: 50, id: 7 });
        let known: HashMap<String, i64> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let mut p = Query::new(POSTGRES);
        p.hosts = Some(known.clone());
        let w = p.where_clause(&f, cursor);
        assert_eq!(
            w,
            "WHERE ((host = $1 AND (host, time_ns) >= ($1, $2) AND (host, time_ns) <= ($1, $3)) \
             OR (host = $4 AND (host, time_ns) >= ($4, $5) AND (host, time_ns) <= ($4, $6))) \
             AND (time_ns < $7 OR id < $8)"
        );
        // The cursor's time (50) is the upper bound, not the filter's (90).
        assert_eq!(p.params[2], Value::Int(50));
        // No time bound and no cursor: the plain host list.
        let mut p = Query::new(POSTGRES);
        p.hosts = Some(known);
        let w = p.where_clause(
            &Filter {
                host_ids: vec!["a".into()],
                ..Default::default()
            },
            None,
        );
        assert_eq!(w, "WHERE host IN ($1)");
        let mut s = Query::new(SQLITE);
        let w = s.where_clause(&f, cursor);
        assert!(w.contains("time_ns >= ?3 AND time_ns <= ?4"), "{w}");
    }
}
