//! Access control on the target, for a task that opts in (`rbac`): roles, their grants and
//! users' bindings to them, and users. Each event is applied by the state it asks for (a role
//! that exists, a privilege granted), so a replay after a crash finds it done.

use base64::Engine;
use milvus::proto::milvus as rpc;
use tracing::warn;

use super::replicated::request;
use super::{MilvusTarget, check};
use crate::apply::TargetError;
use crate::model::ReplicatedKind;

/// `OperateUserRoleType` / `OperatePrivilegeType`: 0 adds (binds, grants), 1 removes.
const ADD: i32 = 0;

impl MilvusTarget {
    pub(super) fn apply_access_control(
        &mut self,
        kind: ReplicatedKind,
        bytes: &[u8],
    ) -> Result<(), TargetError> {
        let mut client = self.client.clone();
        match kind {
            ReplicatedKind::CreateRole => {
                let r: rpc::CreateRoleRequest = request(kind, bytes)?;
                let role = r.entity.clone().unwrap_or_default().name;
                if self.roles()?.contains(&role) {
                    return Ok(());
                }
                let reply = self.unary("CreateRole", client.create_role(r))?;
                check("CreateRole", &role, Some(&reply))
            }
            ReplicatedKind::DropRole => {
                let r: rpc::DropRoleRequest = request(kind, bytes)?;
                if !self.roles()?.contains(&r.role_name) {
                    return Ok(());
                }
                let role = r.role_name.clone();
                let reply = self.unary("DropRole", client.drop_role(r))?;
                check("DropRole", &role, Some(&reply))
            }
            ReplicatedKind::OperateUserRole => {
                let r: rpc::OperateUserRoleRequest = request(kind, bytes)?;
                let Some(roles) = self.roles_of(&r.username)? else {
                    warn!(user = %r.username, role = %r.role_name,
                        "the user is not on the target: its binding to the role is not replicated");
                    return Ok(());
                };
                if roles.contains(&r.role_name) == (r.r#type == ADD) {
                    return Ok(());
                }
                let role = r.role_name.clone();
                let reply = self.unary("OperateUserRole", client.operate_user_role(r))?;
                check("OperateUserRole", &role, Some(&reply))
            }
            ReplicatedKind::OperatePrivilege => {
                let r: rpc::OperatePrivilegeRequest = request(kind, bytes)?;
                let entity = r.entity.clone().unwrap_or_default();
                let privilege = entity
                    .grantor
                    .as_ref()
                    .and_then(|g| g.privilege.as_ref())
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                if self.granted(&entity)?.contains(&privilege) == (r.r#type == ADD) {
                    return Ok(());
                }
                let role = entity.role.unwrap_or_default().name;
                let reply = self.unary("OperatePrivilege", client.operate_privilege(r))?;
                check("OperatePrivilege", &role, Some(&reply))
            }
            ReplicatedKind::CreateUser => {
                let mut r: rpc::CreateCredentialRequest = request(kind, bytes)?;
                if self.users()?.contains(&r.username) {
                    return Ok(());
                }
                let Some(password) = &self.user_password else {
                    warn!(user = %r.username, "the task has no rbac.user_password: the user is not made on the target");
                    return Ok(());
                };
                r.password = base64::engine::general_purpose::STANDARD.encode(password.expose());
                let user = r.username.clone();
                let reply = self.unary("CreateCredential", client.create_credential(r))?;
                check("CreateCredential", &user, Some(&reply))
            }
            ReplicatedKind::DropUser => {
                let r: rpc::DeleteCredentialRequest = request(kind, bytes)?;
                if !self.users()?.contains(&r.username) {
                    return Ok(());
                }
                let user = r.username.clone();
                let reply = self.unary("DeleteCredential", client.delete_credential(r))?;
                check("DeleteCredential", &user, Some(&reply))
            }
            other => Err(TargetError::Permanent(format!(
                "{} is no access-control event",
                other.operation().as_str()
            ))),
        }
    }

    fn roles(&mut self) -> Result<Vec<String>, TargetError> {
        let mut client = self.client.clone();
        let reply = self.unary(
            "SelectRole",
            client.select_role(rpc::SelectRoleRequest::default()),
        )?;
        check("SelectRole", "", reply.status.as_ref())?;
        Ok(reply
            .results
            .into_iter()
            .filter_map(|r| r.role.map(|role| role.name))
            .collect())
    }

    fn users(&mut self) -> Result<Vec<String>, TargetError> {
        let mut client = self.client.clone();
        let reply = self.unary(
            "ListCredUsers",
            client.list_cred_users(rpc::ListCredUsersRequest::default()),
        )?;
        check("ListCredUsers", "", reply.status.as_ref())?;
        Ok(reply.usernames)
    }

    /// The roles `user` is bound to; `None` when the target has no such user.
    fn roles_of(&mut self, user: &str) -> Result<Option<Vec<String>>, TargetError> {
        if !self.users()?.iter().any(|u| u == user) {
            return Ok(None);
        }
        let mut client = self.client.clone();
        let request = rpc::SelectUserRequest {
            user: Some(rpc::UserEntity {
                name: user.to_owned(),
            }),
            include_role_info: true,
            ..Default::default()
        };
        let reply = self.unary("SelectUser", client.select_user(request))?;
        check("SelectUser", user, reply.status.as_ref())?;
        Ok(Some(
            reply
                .results
                .into_iter()
                .flat_map(|r| r.roles)
                .map(|role| role.name)
                .collect(),
        ))
    }

    /// The privileges the entity's role holds on its object.
    fn granted(&mut self, entity: &rpc::GrantEntity) -> Result<Vec<String>, TargetError> {
        let role = entity.role.clone().unwrap_or_default().name;
        if !self.roles()?.contains(&role) {
            return Ok(Vec::new());
        }
        let mut client = self.client.clone();
        let request = rpc::SelectGrantRequest {
            entity: Some(rpc::GrantEntity {
                grantor: None,
                ..entity.clone()
            }),
            ..Default::default()
        };
        let reply = self.unary("SelectGrant", client.select_grant(request))?;
        check("SelectGrant", &role, reply.status.as_ref())?;
        Ok(reply
            .entities
            .into_iter()
            .filter_map(|e| e.grantor.and_then(|g| g.privilege).map(|p| p.name))
            .collect())
    }
}
