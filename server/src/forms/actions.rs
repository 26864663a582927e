//! The small forms behind the pages' buttons and dialogs (signing in, tokens, passwords, users,
//! run tags and archiving, draining a worker, importing a dataset, the raw JSON editor), as
//! the handlers in `routes/` receive them. The training and experiment forms have modules of
//! their own.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct LoginForm {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub next: String,
}

#[derive(Deserialize)]
pub struct TokenForm {
    pub name: String,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    pub current: String,
    pub new: String,
    pub again: String,
}

#[derive(Deserialize)]
pub struct NewUserForm {
    pub name: String,
    pub role: String,
    pub password: String,
}

#[derive(Deserialize)]
pub struct RoleForm {
    pub role: String,
}

#[derive(Deserialize)]
pub struct DisabledForm {
    /// "1": disable; "0": enable again.
    pub disabled: Switch,
}

#[derive(Deserialize)]
pub struct ImportForm {
    pub name: String,
    pub format: String,
    pub annotations: String,
    #[serde(default)]
    pub images: String,
}

/// The raw JSON editor's post: a run name and a config as JSON.
#[derive(Deserialize)]
pub struct JsonRunForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub config: String,
}

#[derive(Deserialize)]
pub struct TagsForm {
    #[serde(default)]
    pub tags: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Deserialize)]
pub struct ArchiveForm {
    /// `1`: archive; `0`: bring back.
    pub archive: Switch,
}

#[derive(Deserialize)]
pub struct DrainForm {
    /// `1`: drain; `0`: take runs again.
    pub drain: Switch,
}

/// A two-way button's value (archive, disable, drain): `1` on, `0` off; anything else is
/// refused rather than read as off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Switch(pub bool);

impl TryFrom<String> for Switch {
    type Error = String;

    fn try_from(value: String) -> Result<Switch, String> {
        match value.as_str() {
            "1" => Ok(Switch(true)),
            "0" => Ok(Switch(false)),
            other => Err(format!("a switch is 1 (on) or 0 (off), not {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ArchiveForm, Switch};

    #[test]
    fn a_switch_is_one_or_zero_and_nothing_else() {
        let posted = |body: &str| serde_urlencoded::from_str::<ArchiveForm>(body);
        assert_eq!(posted("archive=1").unwrap().archive, Switch(true));
        assert_eq!(posted("archive=0").unwrap().archive, Switch(false));
        let refused = posted("archive=yes").err().unwrap().to_string();
        assert!(refused.contains("not \"yes\""), "{refused}");
    }
}
