/**
 * A typed use of every endpoint of the Maildash Campaigns API, as a TypeScript client would write it.
 *
 * `tsc --strict` checks it against the types that openapi-typescript generates from the api's OpenAPI
 * document (tests/integration/test_typescript_client.py does both, in `make test`): a path, method, parameter,
 * body field or answer field that the document no longer has, or a status that is no longer an enum, fails
 * the check; an operation of the document that this file does not call fails that test.
 */
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api";

type Schema<Name extends keyof components["schemas"]> = components["schemas"][Name];
// openapi-fetch leaves out the fields typed `null` (the error envelope's `data`).
type Problem = Omit<Schema<"ErrorOut">, "data"> | Omit<Schema<"ValidationErrorOut">, "data">;
type Api = ReturnType<typeof createClient<paths>>;

/** The envelope's data, or the api's own message for people and code for machines. */
function settled<T>(answer: { data?: { data: T; error: string | null }; error?: Problem }): T {
  if (answer.error !== undefined) {
    const where = "fields" in answer.error ? answer.error.fields.map((f) => f.loc.join(".")).join(", ") : "";
    throw new Error(`${answer.error.error_code}: ${answer.error.error} ${where}`);
  }
  if (answer.data === undefined || answer.data.error !== null) throw new Error("no data");
  return answer.data.data;
}

/** Exhaustive over the enum: a status typed as a plain string would not compile. */
function isUnderway(status: Schema<"CampaignStatus">): boolean {
  switch (status) {
    case "draft":
    case "completed":
    case "stopped":
      return false;
    case "scheduled":
    case "running":
    case "paused":
      return true;
    default: {
      const unknown: never = status;
      return unknown;
    }
  }
}

function isSettled(status: Schema<"MessageStatus">): boolean {
  const unsettled: Schema<"MessageStatus">[] = ["planned", "dispatched", "sending"];
  return !unsettled.includes(status);
}

function mayGetMail(status: Schema<"LeadStatus">): boolean {
  return status === "active";
}

export async function login(baseUrl: string, email: string, password: string): Promise<Api> {
  const api = createClient<paths>({ baseUrl });
  const token = await api.POST("/api/v1/auth/token", {
    body: { username: email, password },
    bodySerializer: (body) => new URLSearchParams({ username: body.username, password: body.password }),
  });
  if (token.error !== undefined) throw new Error(`${token.error.error_code}: ${token.error.error}`);
  const bearer: "bearer" = token.data.token_type;
  return createClient<paths>({ baseUrl, headers: { Authorization: `${bearer} ${token.data.access_token}` } });
}

export async function accounts(api: Api): Promise<void> {
  const me = settled(await api.GET("/api/v1/auth/me"));
  console.log(me.user, me.workspace);
  const created = settled(
    await api.POST("/api/v1/workspaces", {
      body: { name: "Agency", admin_email: "ops@agency.example", admin_password: "correct horse" },
    }),
  );
  const admin: string = created.admin.email;
  const off = settled(await api.POST("/api/v1/users/deactivate", { body: { email: admin } }));
  const on = settled(await api.POST("/api/v1/users/activate", { body: { email: admin } }));
  console.log(off.active === false, on.active, created.workspace.id);
}

export async function domains(api: Api): Promise<string> {
  const domain = settled(
    await api.POST("/api/v1/domains", {
      body: {
        domain: "outreach.example",
        from_email: "anna@outreach.example",
        smtp: { host: "smtp.outreach.example", port: 587, security: "starttls" },
        imap: { host: "imap.outreach.example", username: "anna", password: "secret" },
        min_interval_seconds: 1200,
      },
    }),
  );
  const path = { params: { path: { domain_id: domain.id } } };
  const page = settled(await api.GET("/api/v1/domains", { params: { query: { page: 1, search: "outreach" } } }));
  const same = settled(await api.GET("/api/v1/domains/{domain_id}", path));
  const changed = settled(
    await api.PATCH("/api/v1/domains/{domain_id}", { ...path, body: { daily_cap: 100, smtp: { port: 465 } } }),
  );
  const signed = settled(await api.POST("/api/v1/domains/{domain_id}/dkim", { ...path, body: { ed25519: true } }));
  for (const check of settled(await api.GET("/api/v1/domains/{domain_id}/checks", path))) {
    const verdict: "pass" | "warn" | "fail" = check.status;
    console.log(check.check, verdict, check.fix ?? "");
  }
  const mailbox = settled(await api.POST("/api/v1/domains/{domain_id}/imap/test", path));
  const resumed = settled(await api.POST("/api/v1/domains/{domain_id}/resume", path));
  // Connect the mailbox with OAuth2: send the person to the authorize URL; the provider calls the api back.
  const started = settled(await api.POST("/api/v1/domains/{domain_id}/oauth", { ...path, body: { provider: "google" } }));
  const oauthState: "active" | "needs_reauth" | undefined = same.oauth?.state;
  console.log(started.authorize_url, started.expires_at, oauthState, same.oauth?.reconnect_url ?? "");
  const disconnected = settled(await api.DELETE("/api/v1/domains/{domain_id}/oauth", path));
  console.log(disconnected.deleted);
  const security: "none" | "starttls" | "tls" = same.smtp.security;
  const state: "active" | "paused" = resumed.state;
  console.log(page.total, changed.daily_cap, signed.dkim?.records, mailbox.ok, mailbox.error, security, state);
  console.log(same.paused_reason ?? "", same.health.last_24h, same.health.thresholds.bounce_rate);
  return domain.domain;
}

export async function leads(api: Api): Promise<string> {
  const lead = settled(
    await api.POST("/api/v1/leads", {
      body: {
        email: "jan@client.example",
        first_name: "Jan",
        tags: ["nl"],
        fields: { city: "Utrecht", size: 12 },
        timezone: "Europe/Amsterdam",
        country: "NL",
      },
    }),
  );
  const path = { params: { path: { lead_id: lead.id } } };
  const page = settled(await api.GET("/api/v1/leads", { params: { query: { status: "active", tag: "nl" } } }));
  const same = settled(await api.GET("/api/v1/leads/{lead_id}", path));
  const changed = settled(
    await api.PATCH("/api/v1/leads/{lead_id}", { ...path, body: { company: "Client BV", timezone: null } }),
  );
  const multipart = (body: { file: string }): FormData => {
    const form = new FormData();
    form.append("file", body.file);
    return form;
  };
  const report = settled(
    await api.PUT("/api/v1/leads/{lead_id}/report", { ...path, body: { file: "%PDF-1.4" }, bodySerializer: multipart }),
  );
  const imported = settled(
    await api.POST("/api/v1/leads/import", { body: { file: "email\nanna@lead.example\n" }, bodySerializer: multipart }),
  );
  for (const problem of imported.errors) console.log(problem.row, problem.error);
  console.log(page.items.map((l) => mayGetMail(l.status)), same.fields, changed.company, report.size);
  console.log(same.timezone ?? "no zone", same.country ?? "no country", changed.timezone === null);
  return lead.id;
}

export async function templates(api: Api, leadId: string): Promise<string> {
  const template = settled(
    await api.POST("/api/v1/templates", {
      body: { name: "Intro", subject: "Hello {{ first_name }}", body_html: "<p>Hi {{ first_name }}</p>" },
    }),
  );
  const path = { params: { path: { template_id: template.id } } };
  const page = settled(await api.GET("/api/v1/templates", { params: { query: { page_size: 50 } } }));
  const same = settled(await api.GET("/api/v1/templates/{template_id}", path));
  const changed = settled(
    await api.PATCH("/api/v1/templates/{template_id}", { ...path, body: { followup_subject: null } }),
  );
  const preview = settled(
    await api.POST("/api/v1/templates/{template_id}/preview", { ...path, body: { lead_id: leadId, followup: false } }),
  );
  console.log(page.items.length, same.body_text ?? "", changed.followup_subject, preview.subject, preview.html);
  return template.id;
}

export async function suppressions(api: Api): Promise<void> {
  const added = settled(await api.POST("/api/v1/suppressions", { body: { domain: "competitor.example" } }));
  const path = { params: { path: { suppression_id: added.id } } };
  const page = settled(await api.GET("/api/v1/suppressions", { params: { query: { search: "competitor" } } }));
  const same = settled(await api.GET("/api/v1/suppressions/{suppression_id}", path));
  const gone = settled(await api.DELETE("/api/v1/suppressions/{suppression_id}", path));
  console.log(page.total, same.email ?? same.domain, same.reason, gone.deleted);
}

export async function campaigns(api: Api, templateId: string, leadId: string, domain: string): Promise<void> {
  const wizard: Schema<"CampaignIn"> = {
    name: "First",
    template_id: templateId,
    audience: { mode: "static", lead_ids: [leadId], exclude_recent_days: 0 },
    schedule: {
      start_mode: "draft",
      window: { days: [0, 1, 2, 3, 4], start: "08:00", end: "17:00" },
      window_mode: "recipient",
    },
    domains: [domain],
    followup: { enabled: true, days: 3 },
    tracking: { opens: true, clicks: false },
  };
  const planned = settled(await api.POST("/api/v1/campaigns/dry-run", { body: wizard }));
  const created = settled(await api.POST("/api/v1/campaigns", { body: wizard }));
  const path = { params: { path: { campaign_id: created.id } } };
  const again = settled(await api.POST("/api/v1/campaigns/{campaign_id}/dry-run", path));
  const started = settled(await api.POST("/api/v1/campaigns/{campaign_id}/start", path));
  const paused = settled(await api.POST("/api/v1/campaigns/{campaign_id}/pause", path));
  const resumed = settled(await api.POST("/api/v1/campaigns/{campaign_id}/resume", path));
  const detail = settled(await api.GET("/api/v1/campaigns/{campaign_id}", path));
  const steps: Schema<"StepIn">[] = [
    { template_id: templateId, delay_days: 3 },
    { template_id: templateId, delay_days: 6, attach_report: true, condition: "not_opened" },
  ];
  const edited = settled(await api.PUT("/api/v1/campaigns/{campaign_id}/steps", { ...path, body: { steps } }));
  const stepTimeline = settled(
    await api.GET("/api/v1/campaigns/{campaign_id}", {
      params: { path: { campaign_id: created.id }, query: { step: 1 } },
    }),
  );
  const page = settled(
    await api.GET("/api/v1/campaigns", { params: { query: { status: "running", created_from: created.created_at } } }),
  );
  const messages = settled(
    await api.GET("/api/v1/campaigns/messages", {
      params: { query: { campaign_id: created.id, status: "failed", is_followup: false } },
    }),
  );
  for (const message of messages.items) {
    const resent = settled(
      await api.POST("/api/v1/campaigns/messages/{message_id}/resend", {
        params: { path: { message_id: message.id } },
      }),
    );
    console.log(isSettled(resent.status), resent.retry_count, resent.last_error ?? "");
  }
  const stopped = settled(await api.POST("/api/v1/campaigns/{campaign_id}/stop", path));
  console.log(planned.per_domain, planned.slots[0]?.scheduled_at, again.followups_expected, started.status);
  console.log(isUnderway(paused.status), resumed.status, page.items.length, isUnderway(stopped.status));
  console.log(detail.kpis.open_rate, detail.kpis.total_sent, detail.timeline.map((day) => day.sent));
  console.log(edited.applied_from, edited.unchanged, edited.note, edited.steps.map((step) => step.condition));
  console.log(planned.steps_expected.map((step) => step.count), planned.steps_note, detail.steps.length);
  console.log(detail.kpis_by_step.map((step) => step.skipped), stepTimeline.timeline.length, detail.stop_rules);
  const recipient: "campaign" | "recipient" = detail.window_mode;
  console.log(recipient, planned.window_mode, planned.leads_without_zone ?? "campaign mode");
}

export async function cleanUp(api: Api, leadId: string, templateId: string, domainId: string): Promise<void> {
  const lead = settled(await api.DELETE("/api/v1/leads/{lead_id}", { params: { path: { lead_id: leadId } } }));
  const template = settled(
    await api.DELETE("/api/v1/templates/{template_id}", { params: { path: { template_id: templateId } } }),
  );
  const domain = settled(
    await api.DELETE("/api/v1/domains/{domain_id}", { params: { path: { domain_id: domainId } } }),
  );
  console.log(lead.id, template.deleted, domain.deleted);
}

export async function espWebhooks(api: Api): Promise<void> {
  const created = settled(
    await api.POST("/api/v1/esp-webhooks", { body: { provider: "mailgun", signing_key: "k".repeat(32) } }),
  );
  const path = { params: { path: { esp_webhook_id: created.id } } };
  const page = settled(await api.GET("/api/v1/esp-webhooks", { params: { query: { search: "mailgun" } } }));
  const same = settled(await api.GET("/api/v1/esp-webhooks/{esp_webhook_id}", path));
  const changed = settled(await api.PATCH("/api/v1/esp-webhooks/{esp_webhook_id}", { ...path, body: { active: false } }));
  const gone = settled(await api.DELETE("/api/v1/esp-webhooks/{esp_webhook_id}", path));
  const provider: "ses" | "postmark" | "sendgrid" | "mailgun" = same.provider;
  console.log(page.total, provider, same.url, same.has_signing_key, changed.active, gone.deleted);
}

export async function workspaceSettings(api: Api): Promise<void> {
  const before = settled(await api.GET("/api/v1/workspace/settings"));
  const after = settled(
    await api.PATCH("/api/v1/workspace/settings", { body: { health_thresholds: { bounce_rate: 0.03 } } }),
  );
  const own: number | null = after.health_thresholds.bounce_rate;
  console.log(before.health_thresholds_effective.complaint_rate, own);
}

export async function webhookEndpoints(api: Api): Promise<void> {
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const body = { url: "https://hooks.example.com/maildash", event_types: ["message.sent" as const], secret };
  const created = settled(await api.POST("/api/v1/webhook-endpoints", { body }));
  const path = { params: { path: { webhook_endpoint_id: created.id } } };
  const page = settled(await api.GET("/api/v1/webhook-endpoints", { params: { query: { search: "hooks" } } }));
  const same = settled(await api.GET("/api/v1/webhook-endpoints/{webhook_endpoint_id}", path));
  const changed = settled(
    await api.PATCH("/api/v1/webhook-endpoints/{webhook_endpoint_id}", { ...path, body: { enabled: true } }),
  );
  const deliveries = settled(
    await api.GET("/api/v1/webhook-endpoints/{webhook_endpoint_id}/deliveries", {
      params: { ...path.params, query: { status: "failed", page_size: 50 } },
    }),
  );
  const attempts = settled(await api.GET("/api/v1/webhook-endpoints/{webhook_endpoint_id}/attempts", path));
  for (const delivery of deliveries.items) {
    const again = settled(
      await api.POST("/api/v1/webhook-endpoints/{webhook_endpoint_id}/deliveries/{delivery_id}/redeliver", {
        params: { path: { webhook_endpoint_id: created.id, delivery_id: delivery.id } },
      }),
    );
    const status: "pending" | "delivered" | "failed" = again.status;
    console.log(status, again.next_attempt_at, delivery.event_type, delivery.payload);
  }
  const gone = settled(await api.DELETE("/api/v1/webhook-endpoints/{webhook_endpoint_id}", path));
  const reason: string | null = same.disabled_reason;
  console.log(page.total, reason, changed.enabled, attempts.items.map((a) => a.status_code), gone.deleted);
}
