//! `/architecture`: the fleet by architecture (network, scaling group), the groups with an odd
//! one out first, each host with its score and reasons, and each reason a link to the
//! timeline filtered to what made the host odd.

use super::auth::urlencode;
use super::layout::{self, page};
use super::{blocking, PageResult, Viewer, S};
use crate::fleet::{Feature, FeatureKind};
use crate::timeline::ql::term;
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};

pub(super) fn routes() -> Router<S> {
    Router::new().route("/architecture", get(architecture))
}

/// The timeline query that finds the events behind a feature on its host; `None` for
/// features that are not events (preparedness, instance profile: the host page says them).
pub(super) fn feature_query(f: &Feature) -> Option<String> {
    Some(match f.kind {
        FeatureKind::Exec => term("exe", &f.value),
        FeatureKind::ParentChild => {
            let (p, c) = f.value.split_once(" -> ")?;
            format!("{} {}", term("parent", p), term("exe", c))
        }
        FeatureKind::Connect => {
            let (addr, port) = f.value.rsplit_once(':')?;
            format!("{} {}", term("dst", addr), term("dst_port", port))
        }
        FeatureKind::Login => term("user", &f.value),
        FeatureKind::Listen => format!("kind:socket_listen {}", term("dst_port", &f.value)),
        FeatureKind::KernelModule => format!("kind:kernel_module {}", term("message", &f.value)),
        FeatureKind::Bpf => format!("kind:bpf_pinned {}", term("path", &f.value)),
        FeatureKind::Preparedness | FeatureKind::InstanceProfile => return None,
    })
}

async fn architecture(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult<Markup> {
    let st = state.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let report = blocking(move || Ok(st.fleet.report(st.meta(), now)?)).await?;
    let window_h = (report.to_ns - report.from_ns) / 3_600_000_000_000;
    let odd = report.hosts.iter().filter(|h| h.outlier).count();
    let body = html! {
        h1 { "Architecture" }
        p.muted {
            (report.groups.len()) " groups, " (report.hosts.len()) " hosts in a group, "
            (odd) " standing out among their peers over the last " (window_h) " h. "
            "A feature seen on k of a group's n hosts weighs ln(n/k); groups of fewer than three are not scored."
        }
        @if !report.truncated.is_empty() {
            p.warn { "Profiles were cut at the row bound for: "
                @for (i, k) in report.truncated.iter().enumerate() { @if i > 0 { ", " } (format!("{k:?}")) }
                " — scores are incomplete." }
        }
        @if !report.ungrouped.is_empty() {
            p.muted { (report.ungrouped.len()) " hosts gave no cloud context and are in no group." }
        }
        @for g in &report.groups {
            @let outliers = g.hosts.iter().filter(|h| h.outlier).count();
            div.card.group {
                h2 { (layout::clean(&g.group.label)) " "
                    span.muted { "(" (g.members) " members" @if g.scored { ", " (outliers) " outlier" @if outliers != 1 { "s" } } ")" } }
                @if let Some(n) = &g.note { p.muted { (layout::clean(n)) } }
                table.fleet {
                    thead { tr { th { "Host" } th.num { "Score" } th { "Why" } } }
                    tbody {
                        @for h in &g.hosts {
                            tr class=[h.outlier.then_some("outlier")] {
                                td {
                                    @if h.outlier { span.badge.bad { "odd one out" } " " }
                                    a href={"/hosts/" (h.host_id)} { (layout::clean(&h.hostname)) }
                                    br; span.muted.mono { (&h.host_id[..h.host_id.len().min(8)]) }
                                }
                                td.num { (format!("{:.2}", h.score)) }
                                td {
                                    @if h.reasons.is_empty() {
                                        span.muted { @if h.features == 0 { "nothing of its behaviour seen" } @else { "does what its peers do" } }
                                    }
                                    ul.reasons {
                                        @for r in &h.reasons {
                                            li {
                                                (layout::clean(&r.text))
                                                @if let Some(q) = feature_query(&r.feature) {
                                                    " " a.timeline href={"/timeline?host=" (urlencode(&h.host_id)) "&last=" (window_h) "h&query=" (urlencode(&q))} { "timeline" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Architecture", &viewer, "Architecture", body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn f(kind: FeatureKind, v: &str) -> Feature {
        Feature {
            kind,
            value: v.into(),
        }
    }

    #[test]
    fn each_feature_becomes_the_query_that_finds_it() {
        assert_eq!(
            feature_query(&f(FeatureKind::Exec, "/tmp/.x/payload")).unwrap(),
            "exe:/tmp/.x/payload"
        );
        assert_eq!(
            feature_query(&f(FeatureKind::Connect, "198.51.100.7:4444")).unwrap(),
            "dst:198.51.100.7 dst_port:4444"
        );
        assert_eq!(
            feature_query(&f(FeatureKind::ParentChild, "/usr/sbin/nginx -> /bin/sh")).unwrap(),
            "parent:/usr/sbin/nginx exe:/bin/sh"
        );
        // A value the query language must quote is quoted.
        assert_eq!(
            feature_query(&f(FeatureKind::Exec, "/tmp/a b\"c")).unwrap(),
            "exe:\"/tmp/a b\\\"c\""
        );
        assert_eq!(
            feature_query(&f(FeatureKind::Listen, "31337")).unwrap(),
            "kind:socket_listen dst_port:31337"
        );
        assert!(
            feature_query(&f(FeatureKind::Preparedness, "self-test logs.auditd: warn")).is_none()
        );
        assert!(feature_query(&f(FeatureKind::Connect, "no-port")).is_none());
    }
}
