//! `tenantd tenants export|import`: a tenant's archive to and from a file, with a progress
//! bar on a terminal (counts on stderr otherwise).

use std::time::Duration;

use prost::Message;
use std::io::{Read, Write};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::args::{ClientArgs, ExportTenantArgs, ImportTenantArgs, TierArg};
use super::connection::{Bearer, Failure, call, operations_client};
use super::output::Shown;
use crate::progress::{Fallback, Progress};
use crate::proto::longrunning::{self, operation};
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::proto::{self, import_tenant_request, tenant};

type TenantClient = TenantServiceClient<InterceptedService<Channel, Bearer>>;

/// The deadline of a download or an upload (the server's RPC timeout may be shorter).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// How often an operation is looked at while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Starts the export, waits for it, downloads the archive to the file.
pub(super) async fn export(
    args: &ClientArgs,
    mut client: TenantClient,
    export: ExportTenantArgs,
) -> Result<Shown, Failure> {
    let started = call(client.export_tenant(proto::ExportTenantRequest { id: export.id })).await?;
    let done = wait(args, started, "exporting").await?;
    let mut request = tonic::Request::new(proto::ReadTenantArchiveRequest { name: done.name.clone() });
    request.set_timeout(TRANSFER_TIMEOUT);
    let mut stream = client.read_tenant_archive(request).await.map_err(Failure::from_status)?.into_inner();
    // Plain blocking file I/O: a chunk at a time, in a command that does nothing else meanwhile.
    let mut file = std::fs::File::create(&export.file)
        .map_err(|error| Failure::Usage(format!("cannot create {}: {error}", export.file.display())))?;
    let write_failed =
        |error: std::io::Error| Failure::Usage(format!("cannot write {}: {error}", export.file.display()));
    let mut progress: Option<Progress> = None;
    while let Some(chunk) = stream.message().await.map_err(Failure::from_status)? {
        let bar = progress.get_or_insert_with(|| {
            Progress::start("downloading", "bytes", u64::try_from(chunk.total_bytes).ok(), Fallback::Stderr)
        });
        file.write_all(&chunk.data).map_err(write_failed)?;
        bar.advance(chunk.data.len() as u64);
    }
    file.flush().map_err(write_failed)?;
    if let Some(bar) = progress {
        bar.finish();
    }
    Ok(Shown::Operation(done))
}

/// Uploads the file, then waits for the import.
pub(super) async fn import(
    args: &ClientArgs,
    mut client: TenantClient,
    import: ImportTenantArgs,
) -> Result<Shown, Failure> {
    let file = std::fs::File::open(&import.file)
        .map_err(|error| Failure::Usage(format!("cannot open {}: {error}", import.file.display())))?;
    let total = file.metadata().map(|metadata| metadata.len()).ok();
    let options = proto::ImportTenantOptions {
        tenant_id: import.tenant_id.unwrap_or_default(),
        slug: import.slug.unwrap_or_default(),
        isolation_tier: match import.isolation_tier {
            None => tenant::IsolationTier::Unspecified,
            Some(TierArg::Pooled) => tenant::IsolationTier::Pooled,
            Some(TierArg::Schema) => tenant::IsolationTier::Schema,
        } as i32,
        request_id: import.request_id.unwrap_or_default(),
    };
    let first = proto::ImportTenantRequest { part: Some(import_tenant_request::Part::Options(options)) };
    let progress = Progress::start("uploading", "bytes", total, Fallback::Stderr);
    let chunks = futures_util::stream::unfold(Some((file, progress)), |state| async move {
        let (mut file, mut progress) = state?;
        let mut buffer = vec![0; UPLOAD_CHUNK];
        match file.read(&mut buffer) {
            Ok(0) | Err(_) => {
                // A read error ends the upload short: the server refuses it as truncated.
                progress.finish();
                None
            }
            Ok(read) => {
                buffer.truncate(read);
                progress.advance(read as u64);
                let message = proto::ImportTenantRequest { part: Some(import_tenant_request::Part::Chunk(buffer)) };
                Some((message, Some((file, progress))))
            }
        }
    });
    let upload = futures_util::StreamExt::chain(futures_util::stream::iter([first]), chunks);
    let mut request = tonic::Request::new(upload);
    request.set_timeout(TRANSFER_TIMEOUT);
    let started = client.import_tenant(request).await.map_err(Failure::from_status)?.into_inner();
    Ok(Shown::Operation(wait(args, started, "importing").await?))
}

/// Polls the operation until it is done, showing its progress; a failed one is the failure.
async fn wait(
    args: &ClientArgs,
    started: longrunning::Operation,
    label: &'static str,
) -> Result<longrunning::Operation, Failure> {
    let mut operations = operations_client(args).await?;
    let mut progress = Progress::start(label, "%", Some(100), Fallback::Stderr);
    let mut current = started;
    while !current.done {
        tokio::time::sleep(POLL).await;
        let request = longrunning::GetOperationRequest { name: current.name.clone() };
        current = call(operations.get_operation(request)).await?;
        let percent = current
            .metadata
            .as_ref()
            .and_then(|metadata| proto::OperationMetadata::decode(metadata.value.as_slice()).ok())
            .map_or(0, |metadata| metadata.progress_percent);
        progress.set(u64::try_from(percent).unwrap_or_default());
    }
    progress.set(100);
    progress.finish();
    if let Some(operation::Result::Error(status)) = &current.result {
        let code = tonic::Code::from_i32(status.code);
        // The operation's google.rpc.Status, as the transport would carry it.
        let status = tonic::Status::with_details(code, status.message.clone(), status.encode_to_vec().into());
        return Err(Failure::Status(status));
    }
    Ok(current)
}
