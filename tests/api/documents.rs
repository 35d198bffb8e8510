//! Documents: isolation, owner foreign key, size limit and the server-computed hash.

use prost_types::FieldMask;
use sha2::{Digest, Sha256};
use tenantd::proto::{
    CreateDocumentRequest, DeleteDocumentRequest, DeleteUserRequest, Document, GetDocumentRequest,
    ListDocumentsRequest, UpdateDocumentRequest,
};
use tonic::Code;

use super::helpers::{assert_error, spawn_app, unique_slug};

fn new_document(title: &str, owner: &str, content: &[u8]) -> CreateDocumentRequest {
    CreateDocumentRequest {
        document: Some(Document {
            title: title.into(),
            owner_user_id: owner.into(),
            content: content.to_vec(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_documents() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let alice = app.create_user(&tenant_a, "alice@a.example").await;
    let bob = app.create_user(&tenant_b, "bob@b.example").await;
    let mut as_a = app.documents(&tenant_a);
    let mut as_b = app.documents(&tenant_b);
    let plan =
        as_a.create_document(new_document("Plan", &alice.id, b"secret plan")).await.expect("create").into_inner();
    let memo = as_b.create_document(new_document("Memo", &bob.id, b"memo")).await.expect("create").into_inner();

    // Get.
    assert_eq!(as_a.get_document(GetDocumentRequest { id: plan.id.clone() }).await.expect("own").into_inner(), plan);
    assert_error(
        as_b.get_document(GetDocumentRequest { id: plan.id.clone() }).await,
        Code::NotFound,
        "DOCUMENT_NOT_FOUND",
    );

    // List.
    let listed_a = as_a.list_documents(ListDocumentsRequest::default()).await.expect("list").into_inner().documents;
    assert_eq!(listed_a, vec![plan.clone()]);
    let listed_b = as_b.list_documents(ListDocumentsRequest::default()).await.expect("list").into_inner().documents;
    assert_eq!(listed_b, vec![memo.clone()]);

    // Update.
    let retitle = |id: &str, title: &str| UpdateDocumentRequest {
        document: Some(Document { id: id.into(), title: title.into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["title".into()] }),
    };
    assert_error(as_b.update_document(retitle(&plan.id, "pwned")).await, Code::NotFound, "DOCUMENT_NOT_FOUND");
    let renamed = as_a.update_document(retitle(&plan.id, "Plan v2")).await.expect("own update").into_inner();
    assert_eq!(renamed.title, "Plan v2");
    assert_eq!(renamed.content, plan.content, "fields outside the mask are kept");

    // Delete.
    let delete = |id: &str| DeleteDocumentRequest { id: id.into(), etag: String::new() };
    assert_error(as_b.delete_document(delete(&plan.id)).await, Code::NotFound, "DOCUMENT_NOT_FOUND");
    assert_eq!(
        as_a.get_document(GetDocumentRequest { id: plan.id.clone() }).await.expect("kept").into_inner(),
        renamed
    );
    as_a.delete_document(delete(&plan.id)).await.expect("own delete");
    assert_error(
        as_a.get_document(GetDocumentRequest { id: plan.id.clone() }).await,
        Code::NotFound,
        "DOCUMENT_NOT_FOUND",
    );
    assert_eq!(
        as_b.get_document(GetDocumentRequest { id: memo.id.clone() }).await.expect("untouched").into_inner(),
        memo
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_user_fails_as_owner_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let alice = app.create_user(&tenant_a, "alice@a.example").await;
    let bob = app.create_user(&tenant_b, "bob@b.example").await;
    let mut as_a = app.documents(&tenant_a);
    as_a.create_document(new_document("ok", &alice.id, b"")).await.expect("own user as owner");

    let foreign = as_a.create_document(new_document("x", &bob.id, b"")).await.expect_err("foreign owner");
    let missing = as_a
        .create_document(new_document("x", &uuid::Uuid::now_v7().to_string(), b""))
        .await
        .expect_err("missing owner");
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(crate::helpers::reason(&foreign), "OWNER_NOT_FOUND");
    assert_eq!(foreign.code(), missing.code());
    assert_eq!(foreign.message(), missing.message());
    assert_eq!(crate::helpers::reason(&foreign), crate::helpers::reason(&missing));
    app.stop().await;
}

#[tokio::test]
async fn content_is_hashed_by_the_server_and_limited_in_size() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("c")).await.id;
    let owner = app.create_user(&tenant, "o@c.example").await;
    let mut documents = app.documents(&tenant);
    let content = b"hello, tenantd".to_vec();
    let created = documents.create_document(new_document("h", &owner.id, &content)).await.expect("create").into_inner();
    let expected: String = Sha256::digest(&content).iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(created.content_sha256, expected);

    let largest = vec![7u8; 1024 * 1024];
    let at_limit = documents.create_document(new_document("max", &owner.id, &largest)).await.expect("1 MiB is allowed");
    assert_eq!(at_limit.into_inner().content.len(), largest.len());
    let over = vec![7u8; 1024 * 1024 + 1];
    assert_error(
        documents.create_document(new_document("big", &owner.id, &over)).await,
        Code::InvalidArgument,
        "CONTENT_TOO_LARGE",
    );
    app.stop().await;
}

#[tokio::test]
async fn documents_are_listed_by_owner_and_owners_cannot_be_deleted_from_under_them() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("o")).await.id;
    let ann = app.create_user(&tenant, "ann@o.example").await;
    let ben = app.create_user(&tenant, "ben@o.example").await;
    let mut documents = app.documents(&tenant);
    let of_ann = documents.create_document(new_document("a1", &ann.id, b"1")).await.expect("create").into_inner();
    let of_ben = documents.create_document(new_document("b1", &ben.id, b"2")).await.expect("create").into_inner();
    let anns = documents
        .list_documents(ListDocumentsRequest { owner_user_id: ann.id.clone(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .documents;
    assert_eq!(anns, vec![of_ann]);
    let everyone =
        documents.list_documents(ListDocumentsRequest::default()).await.expect("list").into_inner().documents;
    assert_eq!(everyone.len(), 2);

    let refused = app.users(&tenant).delete_user(DeleteUserRequest { id: ben.id.clone(), etag: String::new() }).await;
    assert_error(refused, Code::FailedPrecondition, "USER_HAS_DOCUMENTS");
    documents.delete_document(DeleteDocumentRequest { id: of_ben.id, etag: String::new() }).await.expect("delete doc");
    app.users(&tenant)
        .delete_user(DeleteUserRequest { id: ben.id, etag: String::new() })
        .await
        .expect("then the user goes");
    app.stop().await;
}

#[tokio::test]
async fn large_documents_are_paged_so_that_a_default_client_can_read_every_page() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("large")).await.id;
    let owner = app.create_user(&tenant, "o@large.example").await;
    let mut documents = app.documents(&tenant);
    let mut created = Vec::new();
    for index in 0..5u8 {
        let content = vec![index; 1024 * 1024];
        let document = documents.create_document(new_document(&format!("big {index}"), &owner.id, &content)).await;
        created.push(document.expect("create").into_inner().id);
    }
    // tonic's client, like other gRPC clients, refuses responses over 4 MiB by default.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = documents
            .list_documents(ListDocumentsRequest { page_size: 10, page_token, ..Default::default() })
            .await
            .expect("every page fits a default client")
            .into_inner();
        assert!(page.documents.len() <= 3, "a page holds at most 3 MiB of content");
        seen.extend(page.documents.into_iter().map(|document| document.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, created, "every document once, in order");
    app.stop().await;
}

#[tokio::test]
async fn documents_pass_the_shared_isolation_check() {
    let app = spawn_app().await;
    crate::helpers::assert_isolated(
        &app,
        "DOCUMENT_NOT_FOUND",
        async |tenant| {
            let owner = app.create_user(&tenant, "owner@example.com").await;
            let document = new_document("Plan", &owner.id, b"plan");
            app.documents(&tenant).create_document(document).await.expect("create").into_inner().id
        },
        async |tenant, id| app.documents(&tenant).get_document(GetDocumentRequest { id }).await.map(drop),
        async |tenant, id| {
            let request = DeleteDocumentRequest { id, etag: String::new() };
            app.documents(&tenant).delete_document(request).await.map(drop)
        },
    )
    .await;
    app.stop().await;
}
