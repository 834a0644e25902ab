//! Azure SQL / SQL Server through tiberius (being written).
use super::{Backend, StoreError, Tx};
use std::sync::Arc;

pub struct SqlServerBackend;

impl SqlServerBackend {
    pub async fn connect(
        _setting: &str,
        _identity: Option<Arc<crate::adapters::Identity>>,
    ) -> Result<Self, StoreError> {
        Err(StoreError::Config(
            "the SQL Server backend is being written".into(),
        ))
    }
}

#[async_trait::async_trait]
impl Backend for SqlServerBackend {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        Err(StoreError::Config(
            "the SQL Server backend is being written".into(),
        ))
    }
    async fn init_schema(&self) -> Result<(), StoreError> {
        Err(StoreError::Config(
            "the SQL Server backend is being written".into(),
        ))
    }
    fn describe(&self) -> String {
        "SQL Server".into()
    }
}
