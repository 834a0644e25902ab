//! `RunFilterParameters`, the body of `queryPipelineRuns` and `queryActivityruns`: the required
//! `lastUpdatedAfter` / `lastUpdatedBefore` window, `filters[]` (`operand`, `operator`, `values`),
//! `orderBy[]` and the `continuationToken` of the next page. Parsed once into a [`RunQuery`] that the
//! Data Factory routes apply to pipeline runs or activity runs alike.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Results per page; more come with a `continuationToken`.
pub(crate) const PAGE_SIZE: usize = 100;

/// A field a filter or an ordering can look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    PipelineName,
    Status,
    RunGroupId,
    LatestOnly,
    RunStart,
    RunEnd,
    ActivityName,
    ActivityType,
    ActivityRunStart,
    ActivityRunEnd,
}

impl Operand {
    fn parse(name: &str) -> Option<Self> {
        const ALL: [(&str, Operand); 10] = [
            ("PipelineName", Operand::PipelineName),
            ("Status", Operand::Status),
            ("RunGroupId", Operand::RunGroupId),
            ("LatestOnly", Operand::LatestOnly),
            ("RunStart", Operand::RunStart),
            ("RunEnd", Operand::RunEnd),
            ("ActivityName", Operand::ActivityName),
            ("ActivityType", Operand::ActivityType),
            ("ActivityRunStart", Operand::ActivityRunStart),
            ("ActivityRunEnd", Operand::ActivityRunEnd),
        ];
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, o)| *o)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
}

/// One `filters[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunFilter {
    pub operand: Operand,
    operator: Operator,
    values: Vec<String>,
}

impl RunFilter {
    /// Whether a field with `value` passes (comparisons ignore case, as ADF's do).
    pub fn matches(&self, value: &str) -> bool {
        let any = self.values.iter().any(|v| v.eq_ignore_ascii_case(value));
        match self.operator {
            Operator::Equals | Operator::In => any,
            Operator::NotEquals | Operator::NotIn => !any,
        }
    }
}

/// A parsed `RunFilterParameters`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunQuery {
    pub after: DateTime<Utc>,
    pub before: DateTime<Utc>,
    pub filters: Vec<RunFilter>,
    /// Fields to sort by, most significant first; `true` = descending.
    pub order_by: Vec<(Operand, bool)>,
    /// Index of the first result of the requested page.
    pub skip: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParameters {
    continuation_token: Option<String>,
    last_updated_after: Option<String>,
    last_updated_before: Option<String>,
    #[serde(default)]
    filters: Vec<RawFilter>,
    #[serde(default)]
    order_by: Vec<RawOrderBy>,
}

#[derive(Deserialize)]
struct RawFilter {
    operand: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrderBy {
    order_by: String,
    #[serde(default)]
    order: Option<String>,
}

fn timestamp(field: &str, value: Option<&str>) -> Result<DateTime<Utc>, String> {
    let value = value.ok_or_else(|| format!("The '{field}' field is required."))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("The '{field}' value '{value}' is not a valid ISO 8601 date-time."))
}

impl RunQuery {
    /// Parses a body, accepting filter operands in `filterable` and order fields in `sortable`. The
    /// error is the message of a 400 `BadRequest`.
    pub fn parse(
        body: &[u8],
        filterable: &[Operand],
        sortable: &[Operand],
    ) -> Result<Self, String> {
        let raw: RawParameters = serde_json::from_slice(body)
            .map_err(|e| format!("The request body is not valid RunFilterParameters: {e}."))?;
        let after = timestamp("lastUpdatedAfter", raw.last_updated_after.as_deref())?;
        let before = timestamp("lastUpdatedBefore", raw.last_updated_before.as_deref())?;
        let mut filters = Vec::with_capacity(raw.filters.len());
        for f in raw.filters {
            let operand = Operand::parse(&f.operand)
                .filter(|o| filterable.contains(o))
                .ok_or_else(|| {
                    format!("The filter operand '{}' is not supported here.", f.operand)
                })?;
            let operator = match f.operator.to_ascii_lowercase().as_str() {
                "equals" => Operator::Equals,
                "notequals" => Operator::NotEquals,
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                _ => {
                    return Err(format!(
                        "The filter operator '{}' is not valid.",
                        f.operator
                    ))
                }
            };
            if f.values.is_empty() {
                return Err(format!("The filter on '{}' has no values.", f.operand));
            }
            filters.push(RunFilter {
                operand,
                operator,
                values: f.values,
            });
        }
        let mut order_by = Vec::with_capacity(raw.order_by.len());
        for o in raw.order_by {
            let field = Operand::parse(&o.order_by)
                .filter(|f| sortable.contains(f))
                .ok_or_else(|| {
                    format!("The orderBy field '{}' is not supported here.", o.order_by)
                })?;
            let descending = match o.order.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => return Err(format!("The order '{other}' is not ASC or DESC.")),
            };
            order_by.push((field, descending));
        }
        let skip = match raw.continuation_token.as_deref() {
            None | Some("") => 0,
            Some(token) => token
                .strip_prefix("sim-page-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("The continuation token '{token}' is not valid."))?,
        };
        Ok(Self {
            after,
            before,
            filters,
            order_by,
            skip,
        })
    }

    /// Whether an item last updated at `last_updated` falls in the window.
    pub fn in_window(&self, last_updated: DateTime<Utc>) -> bool {
        self.after <= last_updated && last_updated <= self.before
    }

    /// Whether an item passes every filter; `field` gives the item's value for an operand.
    pub fn passes(&self, field: impl Fn(Operand) -> String) -> bool {
        self.filters.iter().all(|f| f.matches(&field(f.operand)))
    }

    /// Sorts items by the requested fields (stable, so creation order breaks ties).
    pub fn sort<T>(&self, items: &mut [T], field: impl Fn(&T, Operand) -> String) {
        for (operand, descending) in self.order_by.iter().rev() {
            items.sort_by(|a, b| {
                let ordering = field(a, *operand).cmp(&field(b, *operand));
                if *descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
    }

    /// The requested page of `items`, and the continuation token of the next one.
    pub fn page<T>(&self, items: Vec<T>) -> (Vec<T>, Option<String>) {
        let total = items.len();
        let end = self.skip.saturating_add(PAGE_SIZE);
        let page = items.into_iter().skip(self.skip).take(PAGE_SIZE).collect();
        let next = (end < total).then(|| format!("sim-page-{end}"));
        (page, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Operand] = &[Operand::PipelineName, Operand::Status, Operand::RunStart];

    fn body(json: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json).unwrap_or_default()
    }

    #[test]
    fn parses_windows_filters_and_ordering() {
        let query = RunQuery::parse(
            &body(serde_json::json!({
                "lastUpdatedAfter": "2024-01-01T00:00:00Z",
                "lastUpdatedBefore": "2024-01-02T00:00:00.1234567Z",
                "filters": [{"operand": "PipelineName", "operator": "In", "values": ["Wait 1", "Wait 2"]}],
                "orderBy": [{"orderBy": "RunStart", "order": "DESC"}]
            })),
            ALL,
            ALL,
        )
        .expect("valid");
        assert!(query.passes(|_| "wait 1".into()));
        assert!(!query.passes(|_| "Wait 3".into()));
        assert_eq!(query.order_by, vec![(Operand::RunStart, true)]);
        let mut items = vec!["a", "c", "b"];
        query.sort(&mut items, |s, _| s.to_string());
        assert_eq!(items, ["c", "b", "a"]);
    }

    #[test]
    fn required_fields_and_unknown_operands_are_refused() {
        assert!(RunQuery::parse(b"{}", ALL, ALL).is_err());
        assert!(RunQuery::parse(b"not json", ALL, ALL).is_err());
        let bad_operand = body(serde_json::json!({
            "lastUpdatedAfter": "2024-01-01T00:00:00Z", "lastUpdatedBefore": "2024-01-02T00:00:00Z",
            "filters": [{"operand": "TriggerName", "operator": "Equals", "values": ["x"]}]
        }));
        assert!(RunQuery::parse(&bad_operand, ALL, ALL).is_err());
    }

    #[test]
    fn pages_carry_a_continuation_token() {
        let query = RunQuery::parse(
            &body(serde_json::json!({"lastUpdatedAfter": "2024-01-01T00:00:00Z", "lastUpdatedBefore": "2024-01-02T00:00:00Z"})),
            ALL,
            ALL,
        )
        .expect("valid");
        let (page, next) = query.page((0..250).collect::<Vec<_>>());
        assert_eq!(page.len(), PAGE_SIZE);
        assert_eq!(next.as_deref(), Some("sim-page-100"));
        let second = RunQuery::parse(
            &body(serde_json::json!({"lastUpdatedAfter": "2024-01-01T00:00:00Z", "lastUpdatedBefore": "2024-01-02T00:00:00Z", "continuationToken": "sim-page-200"})),
            ALL,
            ALL,
        )
        .expect("valid");
        let (page, next) = second.page((0..250).collect::<Vec<_>>());
        assert_eq!(page.first(), Some(&200));
        assert_eq!(next, None);
    }
}
