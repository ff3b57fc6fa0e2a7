-- Argo CD resource health for finetuning.io/FineTuneJob (key: resource.customizations.health.finetuning.io_FineTuneJob).
-- Progressing while Pending/Queued/Running (or before the operator has seen the latest spec),
-- Suspended while spec.suspend holds the run, Healthy on Succeeded, Degraded on Failed or Stalled.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(status, fallback)
  local msg = status.message
  if msg == nil or msg == "" then
    msg = fallback
  end
  if status.reason ~= nil and status.reason ~= "" then
    return status.reason .. ": " .. msg
  end
  return msg
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the finetune-operator to pick up this FineTuneJob"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(status, "Fine-tuning succeeded")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status, "Fine-tuning failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(status, "Suspended by spec.suspend")
elseif phase == "Pending" or phase == "Queued" or phase == "Running" then
  local stalled = condition(status, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    hs.status = "Degraded"
    hs.message = "Stalled: " .. (stalled.message or "no training step for a while")
  else
    hs.status = "Progressing"
    hs.message = describe(status, phase)
    if status.progress ~= nil and status.progress.summary ~= nil then
      hs.message = hs.message .. " (step " .. status.progress.summary .. ")"
    end
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
