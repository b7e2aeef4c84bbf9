//! The project domain: the fields a BTP project has, how a client's JSON becomes a
//! validated patch, and how a patch applies to a row. Pure: no IO, no clock (the time is
//! an argument), so the REST handlers and the sync engine share exactly one set of rules.

use chrono::{NaiveDate, TimeZone, Utc};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest `name`, `client` and `city` in characters.
pub const SHORT_TEXT_MAX: usize = 200;
/// Longest `notes` in characters.
pub const NOTES_MAX: usize = 10_000;
/// Largest budget: the biggest integer a JavaScript client holds exactly.
pub const BUDGET_MAX: i64 = 9_007_199_254_740_991;

/// Fields the server owns; a client may echo them back in `data` and they are ignored.
const READ_ONLY_FIELDS: [&str; 5] = ["id", "seq", "created_at", "updated_at", "deleted_at"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Planned,
    Active,
    OnHold,
    Done,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Active => "active",
            Status::OnHold => "on_hold",
            Status::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "planned" => Some(Status::Planned),
            "active" => Some(Status::Active),
            "on_hold" => Some(Status::OnHold),
            "done" => Some(Status::Done),
            _ => None,
        }
    }
}

/// One project row as stored, tombstones included (`deleted_at` set).
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Lowercase hyphenated UUID.
    pub id: String,
    /// Seq of the row's last change: its version.
    pub seq: i64,
    pub name: String,
    pub client: String,
    pub city: String,
    pub budget_centimes: i64,
    pub status: Status,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub progress: i64,
    pub notes: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// The seq of each field's last change, which is what tells a stale edit from a
    /// current one (docs/SYNC.md, "Conflicts"). Read only where rows are written (a
    /// push); empty on rows read to be shown.
    pub field_seqs: FieldSeqs,
}

/// The editable fields, in the order [`FieldSeqs`], [`Project::value`] and
/// [`Patch::value`] index them.
pub const FIELDS: [&str; 9] = [
    "name",
    "client",
    "city",
    "budget_centimes",
    "status",
    "start_date",
    "end_date",
    "progress",
    "notes",
];

/// The seq of each field's last change, by [`FIELDS`] position; `None` where it is not
/// known (a row last written before field seqs were kept): such a field counts as
/// changed at the row's own seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSeqs([Option<i64>; FIELDS.len()]);

impl FieldSeqs {
    /// When field `i` last changed, on a row whose own seq is `row_seq`.
    pub fn last_change(&self, i: usize, row_seq: i64) -> i64 {
        self.0.get(i).copied().flatten().unwrap_or(row_seq)
    }

    /// As stored: a JSON object of field name to seq.
    pub fn to_json(&self) -> String {
        let map: Map<String, Value> = FIELDS
            .iter()
            .zip(self.0)
            .filter_map(|(name, seq)| Some((name.to_string(), Value::from(seq?))))
            .collect();
        Value::Object(map).to_string()
    }

    /// From its stored form; names it does not know are ignored.
    pub fn from_json(text: &str) -> Result<FieldSeqs, String> {
        let map: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut seqs = FieldSeqs::default();
        for (i, name) in FIELDS.iter().enumerate() {
            if let Some(v) = map.get(*name) {
                seqs.0[i] = Some(v.as_i64().ok_or_else(|| format!("field seq {v}"))?);
            }
        }
        Ok(seqs)
    }
}

impl Project {
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// A new row from a create patch; `name` is the one required field.
    pub fn create(id: String, patch: &Patch, now: i64) -> Result<Project, Vec<FieldError>> {
        let Some(name) = patch.name.clone() else {
            return Err(vec![FieldError::new("name", "is required")]);
        };
        let mut project = Project {
            id,
            seq: 0,
            name,
            client: String::new(),
            city: String::new(),
            budget_centimes: 0,
            status: Status::Planned,
            start_date: None,
            end_date: None,
            progress: 0,
            notes: String::new(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            field_seqs: FieldSeqs::default(),
        };
        project.merge(patch);
        project.check_dates()?;
        Ok(project)
    }

    /// This row with the patch's fields written over it (field-level last writer wins).
    pub fn patched(&self, patch: &Patch, now: i64) -> Result<Project, Vec<FieldError>> {
        let mut project = self.clone();
        project.merge(patch);
        project.updated_at = now;
        project.check_dates()?;
        Ok(project)
    }

    /// Field `i` of [`FIELDS`] as a client sees it (the JSON of a pull).
    pub fn value(&self, i: usize) -> Value {
        let date = |d: Option<NaiveDate>| d.map_or(Value::Null, |d| Value::from(d.to_string()));
        match i {
            0 => Value::from(self.name.as_str()),
            1 => Value::from(self.client.as_str()),
            2 => Value::from(self.city.as_str()),
            3 => Value::from(self.budget_centimes),
            4 => Value::from(self.status.as_str()),
            5 => date(self.start_date),
            6 => date(self.end_date),
            7 => Value::from(self.progress),
            _ => Value::from(self.notes.as_str()),
        }
    }

    /// The fields whose value differs from `before` (every field of a new row): their
    /// [`FIELDS`] position, the value before (null for a new row) and now.
    pub fn changes(&self, before: Option<&Project>) -> Vec<(usize, Value, Value)> {
        (0..FIELDS.len())
            .filter_map(|i| {
                let now = self.value(i);
                let was = before.map_or(Value::Null, |b| b.value(i));
                (before.is_none() || was != now).then_some((i, was, now))
            })
            .collect()
    }

    /// Stamp `seq` on the `changed` fields of this new state of `before`; the others keep
    /// when they last changed (a field whose last change was not known gets `before`'s
    /// seq, the latest it can have been).
    pub fn mark_changed(
        &mut self,
        before: Option<&Project>,
        changed: &[(usize, Value, Value)],
        seq: i64,
    ) {
        for i in 0..FIELDS.len() {
            self.field_seqs.0[i] = Some(match before {
                Some(b) if !changed.iter().any(|(c, ..)| *c == i) => {
                    b.field_seqs.last_change(i, b.seq)
                }
                _ => seq,
            });
        }
    }

    fn merge(&mut self, patch: &Patch) {
        if let Some(v) = &patch.name {
            self.name = v.clone();
        }
        if let Some(v) = &patch.client {
            self.client = v.clone();
        }
        if let Some(v) = &patch.city {
            self.city = v.clone();
        }
        if let Some(v) = patch.budget_centimes {
            self.budget_centimes = v;
        }
        if let Some(v) = patch.status {
            self.status = v;
        }
        if let Some(v) = patch.start_date {
            self.start_date = v;
        }
        if let Some(v) = patch.end_date {
            self.end_date = v;
        }
        if let Some(v) = patch.progress {
            self.progress = v;
        }
        if let Some(v) = &patch.notes {
            self.notes = v.clone();
        }
    }

    /// `end_date >= start_date` can only be judged on the merged row: a patch may move
    /// one date alone.
    fn check_dates(&self) -> Result<(), Vec<FieldError>> {
        match (self.start_date, self.end_date) {
            (Some(start), Some(end)) if end < start => Err(vec![FieldError::new(
                "end_date",
                "must be on or after start_date",
            )]),
            _ => Ok(()),
        }
    }
}

pub fn format_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl Serialize for Project {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Project", 14)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("client", &self.client)?;
        st.serialize_field("city", &self.city)?;
        st.serialize_field("budget_centimes", &self.budget_centimes)?;
        st.serialize_field("status", self.status.as_str())?;
        st.serialize_field("start_date", &self.start_date.map(|d| d.to_string()))?;
        st.serialize_field("end_date", &self.end_date.map(|d| d.to_string()))?;
        st.serialize_field("progress", &self.progress)?;
        st.serialize_field("notes", &self.notes)?;
        st.serialize_field("created_at", &format_millis(self.created_at))?;
        st.serialize_field("updated_at", &format_millis(self.updated_at))?;
        st.serialize_field("deleted_at", &self.deleted_at.map(format_millis))?;
        st.end()
    }
}

/// A validation failure on one field, reported to the client as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// The editable fields a client sent; `None` = not sent (left as is). For the nullable
/// dates, `Some(None)` clears the value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub name: Option<String>,
    pub client: Option<String>,
    pub city: Option<String>,
    pub budget_centimes: Option<i64>,
    pub status: Option<Status>,
    pub start_date: Option<Option<NaiveDate>>,
    pub end_date: Option<Option<NaiveDate>>,
    pub progress: Option<i64>,
    pub notes: Option<String>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        *self == Patch::default()
    }

    /// Field `i` of [`FIELDS`] as sent, in the JSON a pull would show it; `None` if not
    /// sent.
    pub fn value(&self, i: usize) -> Option<Value> {
        let text = |v: &Option<String>| v.as_deref().map(Value::from);
        let date = |d: &Option<Option<NaiveDate>>| {
            d.map(|d| d.map_or(Value::Null, |d| Value::from(d.to_string())))
        };
        match i {
            0 => text(&self.name),
            1 => text(&self.client),
            2 => text(&self.city),
            3 => self.budget_centimes.map(Value::from),
            4 => self.status.map(|s| Value::from(s.as_str())),
            5 => date(&self.start_date),
            6 => date(&self.end_date),
            7 => self.progress.map(Value::from),
            _ => text(&self.notes),
        }
    }

    /// This patch without field `i` of [`FIELDS`].
    pub fn without(mut self, i: usize) -> Patch {
        match i {
            0 => self.name = None,
            1 => self.client = None,
            2 => self.city = None,
            3 => self.budget_centimes = None,
            4 => self.status = None,
            5 => self.start_date = None,
            6 => self.end_date = None,
            7 => self.progress = None,
            _ => self.notes = None,
        }
        self
    }

    /// Parse and validate a JSON object of project fields. Every bad field is reported,
    /// not only the first, so a form can mark them all at once.
    pub fn from_json(value: &Value) -> Result<Patch, Vec<FieldError>> {
        let Some(obj) = value.as_object() else {
            return Err(vec![FieldError::new("data", "must be an object")]);
        };
        Patch::from_map(obj)
    }

    pub fn from_map(obj: &Map<String, Value>) -> Result<Patch, Vec<FieldError>> {
        let mut patch = Patch::default();
        let mut errors = Vec::new();
        for (key, value) in obj {
            let result = match key.as_str() {
                "name" => text(value, 1, SHORT_TEXT_MAX, false).map(|v| patch.name = v),
                "client" => text(value, 0, SHORT_TEXT_MAX, true).map(|v| patch.client = v),
                "city" => text(value, 0, SHORT_TEXT_MAX, true).map(|v| patch.city = v),
                "notes" => text(value, 0, NOTES_MAX, true).map(|v| patch.notes = v),
                "budget_centimes" => {
                    integer(value, 0, BUDGET_MAX).map(|v| patch.budget_centimes = Some(v))
                }
                "progress" => integer(value, 0, 100).map(|v| patch.progress = Some(v)),
                "status" => status(value).map(|v| patch.status = Some(v)),
                "start_date" => date(value).map(|v| patch.start_date = Some(v)),
                "end_date" => date(value).map(|v| patch.end_date = Some(v)),
                k if READ_ONLY_FIELDS.contains(&k) => Ok(()),
                _ => Err("is not a project field".to_string()),
            };
            if let Err(message) = result {
                errors.push(FieldError {
                    field: key.chars().take(64).collect(),
                    message,
                });
            }
        }
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(errors)
        }
    }
}

/// A string of `min..=max` characters; with `nullable`, JSON null means "".
fn text(value: &Value, min: usize, max: usize, nullable: bool) -> Result<Option<String>, String> {
    match value {
        Value::Null if nullable => Ok(Some(String::new())),
        Value::String(s) => {
            let len = s.chars().count();
            if min > 0 && s.trim().is_empty() {
                Err("must not be empty".into())
            } else if s.contains('\0') {
                // PostgreSQL text cannot hold NUL; refusing it everywhere keeps the two
                // engines answering the same op the same way.
                Err("must not contain a NUL character".into())
            } else if len < min || len > max {
                Err(format!("must be {min} to {max} characters"))
            } else {
                Ok(Some(s.clone()))
            }
        }
        _ => Err("must be a string".into()),
    }
}

fn integer(value: &Value, min: i64, max: i64) -> Result<i64, String> {
    match value.as_i64() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(_) => Err(format!("must be between {min} and {max}")),
        None if value.is_u64() => Err(format!("must be between {min} and {max}")),
        None => Err("must be an integer".into()),
    }
}

fn status(value: &Value) -> Result<Status, String> {
    value
        .as_str()
        .and_then(Status::parse)
        .ok_or_else(|| "must be one of planned, active, on_hold, done".into())
}

fn date(value: &Value) -> Result<Option<NaiveDate>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => parse_date(s)
            .map(Some)
            .ok_or_else(|| "must be an ISO date (YYYY-MM-DD)".into()),
        _ => Err("must be an ISO date (YYYY-MM-DD) or null".into()),
    }
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A client-generated project id, normalised to lowercase hyphenated form so the same
/// UUID spelled differently is the same row.
pub fn parse_id(value: &str) -> Option<String> {
    Uuid::parse_str(value)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = Patch::from_json(&json!({
            "name": "", "progress": 101, "status": "lost", "budget_centimes": -1,
            "start_date": "2024-02-30", "color": "red", "notes": 5
        }))
        .unwrap_err();
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "budget_centimes",
                "color",
                "name",
                "notes",
                "progress",
                "start_date",
                "status"
            ]
        );
    }

    #[test]
    fn nul_characters_are_refused_in_every_text_field() {
        let errors = Patch::from_json(&json!({
            "name": "a\u{0}b", "client": "\u{0}", "notes": "x\u{0}"
        }))
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.message == "must not contain a NUL character"));
        assert!(Patch::from_json(&json!({"name": "tab\there, newline\nok"})).is_ok());
    }

    #[test]
    fn end_before_start_is_rejected_on_the_merged_row() {
        let base = Project::create(
            "a".into(),
            &Patch::from_json(&json!({"name": "x", "start_date": "2024-05-01"})).unwrap(),
            1,
        )
        .unwrap();
        let patch = Patch::from_json(&json!({"end_date": "2024-04-30"})).unwrap();
        let err = base.patched(&patch, 2).unwrap_err();
        assert_eq!(err[0].field, "end_date");
        let ok = Patch::from_json(&json!({"end_date": "2024-05-01"})).unwrap();
        assert!(base.patched(&ok, 2).is_ok());
    }

    #[test]
    fn create_requires_a_name_and_fills_defaults() {
        assert!(Project::create("a".into(), &Patch::default(), 1).is_err());
        let p = Project::create(
            "a".into(),
            &Patch::from_json(&json!({"name": "Villa", "id": "ignored", "seq": 9})).unwrap(),
            7,
        )
        .unwrap();
        assert_eq!(p.status, Status::Planned);
        assert_eq!(p.created_at, 7);
        assert_eq!(p.seq, 0);
    }

    #[test]
    fn ids_are_normalised() {
        assert_eq!(
            parse_id("6F9619FF-8B86-D011-B42D-00C04FC964FF").as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert_eq!(parse_id("not-a-uuid"), None);
    }
}
