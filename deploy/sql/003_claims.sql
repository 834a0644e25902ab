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

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 3)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (3, N'worker claims (ClaimToken, ClaimedDateTime)');
GO
