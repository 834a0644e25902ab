-- procfwk metadata schema, version 3: who is starting a worker. A start claims the worker with a token
-- of its own (ClaimToken) at a time (ClaimedDateTime): a replayed start recognises its own claim, taking
-- over a start that died is a compare-and-set on the token, and only the claim's holder records a run id.
-- Idempotent: columns are added only when missing (procfwk master's CurrentExecution has neither).

IF COL_LENGTH(N'procfwk.CurrentExecution', N'ClaimToken') IS NULL
ALTER TABLE [procfwk].[CurrentExecution] ADD [ClaimToken] UNIQUEIDENTIFIER NULL;
GO

IF COL_LENGTH(N'procfwk.CurrentExecution', N'ClaimedDateTime') IS NULL
ALTER TABLE [procfwk].[CurrentExecution] ADD [ClaimedDateTime] DATETIME2 NULL;
GO


-- Indexes behind the updates and reads that name an execution or a worker rather than a primary key
-- (without them each is a scan, and on Azure SQL a scan under an update takes more locks than it needs).
IF INDEXPROPERTY(OBJECT_ID(N'procfwk.ExecutionControl'), N'IX_ExecutionControl_ExecutionId', 'IndexID') IS NULL
CREATE INDEX [IX_ExecutionControl_ExecutionId] ON [procfwk].[ExecutionControl] ([ExecutionId]);
GO

IF INDEXPROPERTY(OBJECT_ID(N'procfwk.BatchExecution'), N'IX_BatchExecution_ExecutionId', 'IndexID') IS NULL
CREATE INDEX [IX_BatchExecution_ExecutionId] ON [procfwk].[BatchExecution] ([ExecutionId]);
GO

IF INDEXPROPERTY(OBJECT_ID(N'procfwk.PipelineParameters'), N'IX_PipelineParameters_PipelineId', 'IndexID') IS NULL
CREATE INDEX [IX_PipelineParameters_PipelineId] ON [procfwk].[PipelineParameters] ([PipelineId]);
GO

IF INDEXPROPERTY(OBJECT_ID(N'procfwk.ExecutionLog'), N'IX_ExecutionLog_LocalExecutionId', 'IndexID') IS NULL
CREATE INDEX [IX_ExecutionLog_LocalExecutionId] ON [procfwk].[ExecutionLog] ([LocalExecutionId]);
GO

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 3)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (3, N'worker claims (ClaimToken, ClaimedDateTime) and indexes');
GO
