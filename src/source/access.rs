//! Access control, for a task that opts in (`rbac`): Milvus 2.3 keeps roles, grants, users'
//! bindings to roles and users only in etcd (`{root}/meta/root-coord/credential/`), written
//! without a timestamp. Read by the metadata watcher (see [`super::watch`]) and staged on its
//! channel as events on no collection, each stamped with the source's clock when seen.
//!
//! A grant is two keys: `grantee-privileges/{role}/{object type}/{db}.{object}` holds an id,
//! and `grantee-id/{id}/Privilege{name}` one privilege of it. A privilege's key is read as
//! the grant or revoke, its id looked up among the first keys as of that revision.
//!
//! Users are made on the target with the task's `rbac.user_password` (the source's password is
//! a hash); the built-in roles (`admin`, `public`) and user (`root`) are the target's own.

use milvus::proto::milvus::{
    CreateCredentialRequest, CreateRoleRequest, DeleteCredentialRequest, DropRoleRequest,
    GrantEntity, GrantorEntity, ObjectEntity, OperatePrivilegeRequest, OperateUserRoleRequest,
    PrivilegeEntity, RoleEntity,
};
use prost::Message;

use super::meta::{MetaError, SourceMeta};
use crate::model::{CollectionRef, DEFAULT_DB, ReplicatedKind, StagedChange};

const CREDENTIAL: &str = "root-coord/credential/";
const BUILT_IN_ROLES: [&str; 2] = ["admin", "public"];
const BUILT_IN_USER: &str = "root";
/// `OperateUserRoleType` / `OperatePrivilegeType`.
const ADD: i32 = 0;
const REMOVE: i32 = 1;

/// One access-control change as etcd shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessEvent {
    Role {
        role: String,
        created: bool,
    },
    Binding {
        user: String,
        role: String,
        bound: bool,
    },
    Privilege {
        grantee_id: String,
        privilege: String,
        granted: bool,
    },
    User {
        user: String,
        created: bool,
    },
}

/// The event of a key under `credential/` (`path`: the segments after it), if any. `created`
/// and `deleted` say whether the key is new or gone; a key written again changes nothing the
/// target has (a password, say).
pub fn classify(path: &[&str], created: bool, deleted: bool) -> Option<AccessEvent> {
    if !created && !deleted {
        return None;
    }
    Some(match path {
        ["roles", role] if !BUILT_IN_ROLES.contains(role) => AccessEvent::Role {
            role: (*role).to_owned(),
            created,
        },
        ["user-role-mapping", user, role] => AccessEvent::Binding {
            user: (*user).to_owned(),
            role: (*role).to_owned(),
            bound: created,
        },
        ["grantee-id", id, privilege] => AccessEvent::Privilege {
            grantee_id: (*id).to_owned(),
            privilege: (*privilege).to_owned(),
            granted: created,
        },
        ["users", user] if *user != BUILT_IN_USER => AccessEvent::User {
            user: (*user).to_owned(),
            created,
        },
        _ => return None,
    })
}

/// The event as a change to stage at `ts`; `None` for a grant whose role and object cannot be
/// found at `revision` (written by something other than a grant).
pub async fn staged(
    meta: &SourceMeta,
    channel: &str,
    ts: u64,
    event: AccessEvent,
    revision: i64,
) -> Result<Option<StagedChange>, MetaError> {
    let (kind, request) = match event {
        AccessEvent::Role {
            role,
            created: true,
        } => (ReplicatedKind::CreateRole, create_role(role)),
        AccessEvent::Role {
            role,
            created: false,
        } => (
            ReplicatedKind::DropRole,
            DropRoleRequest {
                role_name: role,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        AccessEvent::Binding { user, role, bound } => {
            (ReplicatedKind::OperateUserRole, binding(user, role, bound))
        }
        AccessEvent::Privilege {
            grantee_id,
            privilege,
            granted,
        } => {
            // A revoke of a grant's last privilege removes its id's key too, in the same
            // revision: it is read from the one before.
            let at = if granted { revision } else { revision - 1 };
            let Some(grant) = grant_of(meta, &grantee_id, at).await? else {
                return Ok(None);
            };
            (
                ReplicatedKind::OperatePrivilege,
                grant.request(&privilege, granted),
            )
        }
        AccessEvent::User {
            user,
            created: true,
        } => (ReplicatedKind::CreateUser, create_user(user)),
        AccessEvent::User {
            user,
            created: false,
        } => (
            ReplicatedKind::DropUser,
            DeleteCredentialRequest {
                username: user,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    };
    Ok(Some(change(channel, ts, kind, request)))
}

/// What the source has of access control at `revision`, as changes staged at `ts`: users and
/// roles first, then bindings and grants.
pub async fn seeds(
    meta: &SourceMeta,
    channel: &str,
    ts: u64,
    revision: i64,
) -> Result<Vec<StagedChange>, MetaError> {
    let keys = meta.values_under(CREDENTIAL, revision).await?;
    let paths: Vec<(Vec<&str>, &[u8])> = keys
        .iter()
        .filter_map(|(key, value)| {
            let rel = key.split_once(CREDENTIAL)?.1;
            Some((rel.split('/').collect(), value.as_slice()))
        })
        .collect();
    let mut first = Vec::new();
    let mut then = Vec::new();
    for (path, _) in &paths {
        match classify(path, true, false) {
            Some(AccessEvent::User { user, .. }) => {
                first.push((ReplicatedKind::CreateUser, create_user(user)))
            }
            Some(AccessEvent::Role { role, .. }) => {
                first.push((ReplicatedKind::CreateRole, create_role(role)))
            }
            Some(AccessEvent::Binding { user, role, .. }) => {
                then.push((ReplicatedKind::OperateUserRole, binding(user, role, true)))
            }
            Some(AccessEvent::Privilege {
                grantee_id,
                privilege,
                ..
            }) => {
                let grant = paths.iter().find_map(|(path, value)| {
                    Grant::of_key(path).filter(|_| *value == grantee_id.as_bytes())
                });
                if let Some(grant) = grant {
                    then.push((
                        ReplicatedKind::OperatePrivilege,
                        grant.request(&privilege, true),
                    ));
                }
            }
            None => {}
        }
    }
    Ok(first
        .into_iter()
        .chain(then)
        .map(|(kind, request)| change(channel, ts, kind, request))
        .collect())
}

fn change(channel: &str, ts: u64, kind: ReplicatedKind, request: Vec<u8>) -> StagedChange {
    // On no collection: the applier needs no vchannel applied first.
    let none = CollectionRef {
        id: 0,
        db_name: DEFAULT_DB.to_owned(),
        name: String::new(),
    };
    StagedChange::replicated(channel, ts, none, kind, request, Vec::new())
}

fn create_role(role: String) -> Vec<u8> {
    CreateRoleRequest {
        entity: Some(RoleEntity {
            name: role,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn create_user(user: String) -> Vec<u8> {
    CreateCredentialRequest {
        username: user,
        ..Default::default()
    }
    .encode_to_vec()
}

fn binding(user: String, role: String, bound: bool) -> Vec<u8> {
    OperateUserRoleRequest {
        username: user,
        role_name: role,
        r#type: if bound { ADD } else { REMOVE },
        ..Default::default()
    }
    .encode_to_vec()
}

/// A role's grant on one object, as its `grantee-privileges` key names it.
#[derive(Debug, PartialEq)]
struct Grant {
    role: String,
    object_type: String,
    db_name: String,
    object_name: String,
}

impl Grant {
    /// `["grantee-privileges", role, object type, "{db}.{object}"]`.
    fn of_key(path: &[&str]) -> Option<Grant> {
        let ["grantee-privileges", role, object_type, object] = path else {
            return None;
        };
        let (db_name, object_name) = object.split_once('.')?;
        Some(Grant {
            role: (*role).to_owned(),
            object_type: (*object_type).to_owned(),
            db_name: db_name.to_owned(),
            object_name: object_name.to_owned(),
        })
    }

    /// The public request; `stored` is etcd's name of the privilege (`PrivilegeSearch`),
    /// the API's without its prefix.
    fn request(&self, stored: &str, granted: bool) -> Vec<u8> {
        let privilege = stored.strip_prefix("Privilege").unwrap_or(stored);
        OperatePrivilegeRequest {
            entity: Some(GrantEntity {
                role: Some(RoleEntity {
                    name: self.role.clone(),
                    ..Default::default()
                }),
                object: Some(ObjectEntity {
                    name: self.object_type.clone(),
                }),
                object_name: self.object_name.clone(),
                db_name: self.db_name.clone(),
                grantor: Some(GrantorEntity {
                    user: None,
                    privilege: Some(PrivilegeEntity {
                        name: privilege.to_owned(),
                    }),
                }),
            }),
            r#type: if granted { ADD } else { REMOVE },
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// The grant whose id is `grantee_id`, as of `revision`.
async fn grant_of(
    meta: &SourceMeta,
    grantee_id: &str,
    revision: i64,
) -> Result<Option<Grant>, MetaError> {
    let prefix = format!("{CREDENTIAL}grantee-privileges/");
    Ok(meta
        .values_under(&prefix, revision)
        .await?
        .iter()
        .find(|(_, value)| value.as_slice() == grantee_id.as_bytes())
        .and_then(|(key, _)| {
            let rel = key.split_once(CREDENTIAL)?.1;
            Grant::of_key(&rel.split('/').collect::<Vec<_>>())
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_made_and_removed_are_events_and_the_built_in_ones_none() {
        assert_eq!(
            classify(&["roles", "reader"], true, false),
            Some(AccessEvent::Role {
                role: "reader".into(),
                created: true
            })
        );
        assert_eq!(classify(&["roles", "admin"], true, false), None);
        assert_eq!(classify(&["users", "root"], false, true), None);
        assert_eq!(
            classify(&["users", "ann"], false, false),
            None,
            "a password changed"
        );
        assert_eq!(
            classify(&["grantee-id", "79a3", "PrivilegeSearch"], false, true),
            Some(AccessEvent::Privilege {
                grantee_id: "79a3".into(),
                privilege: "PrivilegeSearch".into(),
                granted: false
            })
        );
    }

    #[test]
    fn a_grant_key_names_its_role_object_and_database_and_the_request_the_api_privilege() {
        let grant =
            Grant::of_key(&["grantee-privileges", "reader", "Collection", "sales.orders"]).unwrap();
        assert_eq!(
            grant,
            Grant {
                role: "reader".into(),
                object_type: "Collection".into(),
                db_name: "sales".into(),
                object_name: "orders".into(),
            }
        );
        let request =
            OperatePrivilegeRequest::decode(grant.request("PrivilegeSearch", true).as_slice())
                .unwrap();
        let entity = request.entity.unwrap();
        assert_eq!(entity.grantor.unwrap().privilege.unwrap().name, "Search");
        assert_eq!((entity.db_name.as_str(), request.r#type), ("sales", ADD));
    }
}
